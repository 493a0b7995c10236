/**
 * Sync keeps no unbounded pile of refusals: past GATEWAY_MAX_UNSENT_REJECTIONS unsent refusals the
 * gateway stops reading the stream until its client takes the ack, then reads on. Before, the Sync
 * loop waited for news the reader had already made while it resumed (a lost wake-up): past the
 * bound the call hung for good, whether its client read its acks or not.
 *
 * The clients share no code with the gateway: Node's own node:http2 (nghttp2, run with `node`,
 * gateway/test/clients/sync-unread.mjs), which really leaves response bytes unread at the HTTP/2
 * level, and @grpc/grpc-js reading as it goes.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RejectReason, SyncRequestSchema, SyncResponseSchema, type SyncResponse } from "../../gen/fleet/v1/ingest_pb";
import { bearer, type grpc, grpcClient, grpcUnary, point, startTestGateway, type TestGateway } from "./helpers";
import { grpcFrame } from "../../test/raw-h2";

const BOUND = 10;

let t: TestGateway;
let client: grpc.Client;
let dir: string;
beforeAll(async () => {
  t = await startTestGateway({ GATEWAY_MAX_UNSENT_REJECTIONS: String(BOUND) });
  client = grpcClient(t.target);
  dir = mkdtempSync(join(tmpdir(), "sync-unread-"));
});
afterAll(async () => {
  client.close();
  await t.gateway.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Points refused so far by the whole gateway, from its metrics. */
const refusedSoFar = async () => {
  const text = await (await fetch(`${t.gateway.adminUrl}/metrics`)).text();
  let n = 0;
  for (const m of text.matchAll(/^gateway_points_refused_total\{[^}]*\} (\d+)$/gm)) n += Number(m[1]);
  return n;
};

test("sync - a client that leaves its acks unread is not read past GATEWAY_MAX_UNSENT_REJECTIONS refusals; once it reads, every refusal arrives and the call ends OK", async () => {
  const v = "unread-1";
  const token = await t.token(v);
  // 20,000 refused points (NaN latitude, ~1.3 MB), then one good point.
  const total = 20_000;
  const frames: Buffer[] = [];
  for (let seq = 1; seq <= total; seq++)
    frames.push(grpcFrame(toBinary(SyncRequestSchema, create(SyncRequestSchema, { position: point(v, seq, { lat: Number.NaN }) }))));
  frames.push(grpcFrame(toBinary(SyncRequestSchema, create(SyncRequestSchema, { position: point(v, total + 1) }))));
  const file = join(dir, "frames.bin");
  writeFileSync(file, Buffer.concat(frames));
  const before = await refusedSoFar();
  const proc = Bun.spawn(["node", join(import.meta.dir, "clients", "sync-unread.mjs"), t.gateway.url, token, file, "2000"], {
    stdout: "pipe",
    stderr: "pipe",
  });
  await Bun.sleep(1500);
  // While the client reads nothing, the gateway read only what its acks in flight hold (what fits
  // the client's 64 KiB HTTP/2 window and the response's 64 KiB high-water mark, ~70 bytes per
  // refusal, plus the bound): not the 20,000 points the client has sent.
  const refusedWhileUnread = (await refusedSoFar()) - before;
  expect(refusedWhileUnread).toBeGreaterThanOrEqual(BOUND);
  expect(refusedWhileUnread).toBeLessThan(3_000);
  const resume = await grpcUnary<{ durableSeq: number }>(client, "resume", bearer(token), {
    $typeName: "fleet.v1.ResumeRequest",
    vehicleId: "",
  });
  expect(resume.response!.durableSeq).toBe(0);
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`sync-unread.mjs failed (exit ${code}): ${err}\n${out}`);
  const r = JSON.parse(out.trim().split("\n").at(-1)!) as { written: number; status: string; message?: string; body: string };
  expect({ status: r.status, message: r.message }).toEqual({ status: "0", message: undefined });
  expect(r.written).toBeLessThan(frames.reduce((n, f) => n + f.length, 0) / 4);
  // Once read, every refusal reached the client exactly once, in acks within the bound, and the good point is durable.
  const body = Buffer.from(r.body, "hex");
  const acks: SyncResponse[] = [];
  for (let off = 0; off < body.length; ) {
    const len = body.readUInt32BE(off + 1);
    acks.push(fromBinary(SyncResponseSchema, body.subarray(off + 5, off + 5 + len)));
    off += 5 + len;
  }
  const rejected = acks.flatMap((a) => a.ack!.rejected);
  expect(rejected.map((x) => x.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
  expect(rejected.every((x) => x.reason === RejectReason.INVALID_COORDINATES)).toBe(true);
  expect(Math.max(...acks.map((a) => a.ack!.rejected.length))).toBeLessThanOrEqual(BOUND + 1);
  expect(acks.at(-1)!.ack!.durableSeq).toBe(total + 1);
}, 10_000);

test("sync - a client reading as it goes gets past GATEWAY_MAX_UNSENT_REJECTIONS refusals (grpc-js): every refusal, then OK", async () => {
  const v = "unread-2";
  const token = await t.token(v);
  const total = 3_000;
  const acks: SyncResponse[] = [];
  const call = (client as unknown as { sync(md: grpc.Metadata, o: grpc.CallOptions): grpc.ClientDuplexStream<unknown, SyncResponse> }).sync(
    bearer(token),
    {
      deadline: Date.now() + 6_000,
    },
  );
  const ended = new Promise<grpc.ServiceError | null>((resolve) => {
    call.on("data", (r: SyncResponse) => acks.push(r));
    call.on("error", (e: grpc.ServiceError) => resolve(e));
    call.on("end", () => resolve(null));
  });
  // Recorded in the year 2000: far too old, each refused TIME_TOO_OLD.
  for (let seq = 1; seq <= total; seq++)
    call.write(create(SyncRequestSchema, { position: point(v, seq, { recordedAt: timestampFromMs(Date.UTC(2000, 0, 1) + seq * 1000) }) }));
  call.write(create(SyncRequestSchema, { position: point(v, total + 1) }));
  call.end();
  const error = await ended;
  // Before the fix: DEADLINE_EXCEEDED after the second ack, the gateway neither reading nor writing.
  expect(error === null ? null : { code: error.code, details: error.details }).toBeNull();
  const rejected = acks.flatMap((a) => a.ack!.rejected);
  expect(rejected).toHaveLength(total);
  expect(rejected.every((x) => x.reason === RejectReason.TIME_TOO_OLD)).toBe(true);
  expect(acks.at(-1)!.ack!.durableSeq).toBe(total + 1);
}, 10_000);
