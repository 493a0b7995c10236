/**
 * A stream carries any amount of data, from clients that share no code with the gateway:
 * Python's grpcio (gRPC's C core) for a long Sync stream and a message near the size limit, over
 * h2c and over TLS; curl for the same unary message; grpc-js run by `node` for a long Upload; and
 * Node's own node:http2 (nghttp2) to watch HTTP/2 flow control push back on a vehicle that sends
 * faster than its points become durable.
 *
 * Bun 1.4.5's session.setLocalWindowSize() made every request body past 65,535 bytes stall for
 * good (lib/grpc/serve.ts says why it is not called); each test here stalled at ~1,100 points before.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PublishRequestSchema, UploadRequestSchema, UploadResponseSchema } from "../gen/fleet/v1/ingest_pb";
import { PositionSchema } from "../gen/fleet/v1/position_pb";
import { startTestGateway, uniqueName, type TestGateway } from "../gateway/test/helpers";
import { testStack, type Stack } from "../dev";
import { pythonGrpc, type PythonGrpc } from "./python-grpc";
import { grpcFrame } from "./raw-h2";

const certFile = join(import.meta.dir, "fixtures", "localhost-cert.pem");
const keyFile = join(import.meta.dir, "fixtures", "localhost-key.pem");
/** Points 200 ms apart (5 fixes per recorded second) are no flood: these tests are about bytes. */
const NO_RATE_LIMIT = {};

let py: PythonGrpc;
let h2c: TestGateway;
let tls: TestGateway;
let stack: Stack;
const dir = mkdtempSync(join(tmpdir(), "fleet-long-streams-"));

beforeAll(async () => {
  py = pythonGrpc();
  stack = await testStack(["nats"]);
  h2c = await startTestGateway(NO_RATE_LIMIT);
  tls = await startTestGateway({ ...NO_RATE_LIMIT, GATEWAY_TLS_CERT: certFile, GATEWAY_TLS_KEY: keyFile });
}, 120_000);

afterAll(async () => {
  await h2c?.gateway.close();
  await tls?.gateway.close();
  py?.remove();
  rmSync(dir, { recursive: true, force: true });
});

/** host:port for grpcio; TLS by the certificate's name. */
const targetOf = (gw: TestGateway, secure: boolean) => (secure ? `localhost:${gw.gateway.port}` : gw.target);

async function python(gw: TestGateway, secure: boolean, mode: string, count: number) {
  const vehicle = uniqueName(`py-${mode}`);
  const [line] = await py.run("long_streams.py", [
    targetOf(gw, secure),
    secure ? certFile : "-",
    await gw.token(vehicle),
    vehicle,
    mode,
    String(count),
  ]);
  return line!;
}

/** A point of `vehicle` recorded `i` steps of 200 ms after `startMs`, along a straight road. */
const position = (vehicle: string, i: number, startMs: number) =>
  create(PositionSchema, {
    vehicleId: vehicle,
    seq: i + 1,
    recordedAt: timestampFromMs(startMs + i * 200),
    lat: 48 + i * 1e-6,
    lon: 11,
    speed: 1,
    heading: 0,
    accuracy: 4,
  });

for (const secure of [false, true]) {
  const over = secure ? "h2 over TLS" : "h2c";
  describe(`long streams over ${over}`, () => {
    const gw = () => (secure ? tls : h2c);

    test(`long streams - one Sync stream from grpcio carries 20,000 points (~1 MB) over ${over}, every one durable`, async () => {
      const r = await python(gw(), secure, "sync", 20_000);
      expect(r).toMatchObject({ durable: 20_000 });
    }, 90_000);

    test(`long streams - a 250 KiB Publish from grpcio is taken whole over ${over}`, async () => {
      const r = await python(gw(), secure, "publish", 250 * 1024);
      expect(r.bytes as number).toBeGreaterThan(245 * 1024);
      expect(r.bytes as number).toBeLessThanOrEqual(gw().config.maxMessageBytes);
      expect(r.rejected).toBe(0);
      expect(r.points as number).toBeGreaterThan(2000);
      expect(r.durable).toBe(r.points);
    }, 60_000);

    test(`long streams - a 250 KiB Publish from curl is taken whole over ${over}`, async () => {
      const vehicle = uniqueName("curl");
      const positions = [];
      // ~5,600 points, 200 ms apart, all in the past.
      const start = Date.now() - 30 * 60_000;
      let size = 0;
      for (let i = 0; size < 250 * 1024 - 100; i++) {
        const p = position(vehicle, i, start);
        positions.push(p);
        size += toBinary(PositionSchema, p).length + 3;
      }
      const body = grpcFrame(toBinary(PublishRequestSchema, create(PublishRequestSchema, { positions })));
      expect(body.length).toBeGreaterThan(245 * 1024);
      const file = join(dir, `${vehicle}.bin`);
      writeFileSync(file, body);
      const url = `${secure ? "https" : "http"}://${secure ? "localhost" : "127.0.0.1"}:${gw().gateway.port}/fleet.v1.IngestService/Publish`;
      // Asynchronous: the gateway answers from this process.
      const curl = Bun.spawn(
        [
          "curl",
          "-sS",
          "--max-time",
          "30",
          ...(secure ? ["--http2", "--cacert", certFile] : ["--http2-prior-knowledge"]),
          "-H",
          "content-type: application/grpc",
          "-H",
          "te: trailers",
          "-H",
          `authorization: Bearer ${await gw().token(vehicle)}`,
          "--data-binary",
          `@${file}`,
          "-D",
          "-",
          "-o",
          join(dir, `${vehicle}.out`),
          url,
        ],
        { stdout: "pipe", stderr: "pipe" },
      );
      const [headers, err, code] = await Promise.all([new Response(curl.stdout).text(), new Response(curl.stderr).text(), curl.exited]);
      expect({ code, err }).toEqual({ code: 0, err: "" });
      // HTTP/2 trailers come after the headers in curl's dump.
      expect(headers).toMatch(/^grpc-status: 0\r?$/m);
      const out = readFileSync(join(dir, `${vehicle}.out`));
      const ack = fromBinary(UploadResponseSchema, out.subarray(5)).ack!;
      expect(ack.durableSeq).toBe(positions.length);
      expect(ack.rejected).toHaveLength(0);
    }, 60_000);
  });
}

test("long streams - one Upload of 200,000 points from grpc-js under Node, every one durable", async () => {
  // grpc-js run by `node`, not Bun: Node's own HTTP/2 underneath, and protobuf encoded by hand.
  // (grpcio takes twice as long here, all of it in its own per-message cost.)
  const vehicle = uniqueName("grpcjs-upload");
  const proc = Bun.spawn(
    ["node", join(import.meta.dir, "clients", "grpcjs-upload.mjs"), h2c.target, await h2c.token(vehicle), vehicle, "200000"],
    { stdout: "pipe", stderr: "pipe" },
  );
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  expect({ code, err }).toEqual({ code: 0, err: "" });
  expect(JSON.parse(out)).toMatchObject({ durable: 200_000, accepted: 200_000 });
}, 120_000);

test("long streams - flow control holds a vehicle back while its points cannot be made durable, and lets it go on after", async () => {
  // Points become durable only once JetStream answers: stop the NATS server for a while.
  const slow = await startTestGateway({ ...NO_RATE_LIMIT, GATEWAY_MAX_IN_FLIGHT: "500" }, { publishTimeoutMs: 30_000 });
  try {
    const vehicle = uniqueName("pushback");
    const count = 40_000; // ~2 MB
    const start = Date.now() - count * 200 - 60_000;
    const frames = Buffer.concat(
      Array.from({ length: count }, (_, i) =>
        grpcFrame(toBinary(UploadRequestSchema, create(UploadRequestSchema, { position: position(vehicle, i, start) }))),
      ),
    );
    const file = join(dir, "pushback.bin");
    writeFileSync(file, frames);
    const pid = stack.pid("nats")!;
    process.kill(pid, "SIGSTOP");
    let stopped = true;
    try {
      const proc = Bun.spawn(
        ["node", join(import.meta.dir, "clients", "h2-upload.mjs"), slow.gateway.url, await slow.token(vehicle), file],
        { stdout: "pipe", stderr: "pipe" },
      );
      const lines: { t?: number; written?: number; done?: boolean; status?: string; body?: string }[] = [];
      const reader = (async () => {
        let rest = "";
        const decoder = new TextDecoder();
        const stdout = proc.stdout.getReader();
        for (;;) {
          const { done, value } = await stdout.read();
          if (done) break;
          rest += decoder.decode(value, { stream: true });
          const parts = rest.split("\n");
          rest = parts.pop()!;
          for (const p of parts) if (p) lines.push(JSON.parse(p));
        }
      })();
      await Bun.sleep(2500);
      const heldAt = lines.filter((l) => l.written !== undefined).at(-1)?.written ?? 0;
      // The gateway read what fits in its in-flight window and stopped; the client's writes stopped
      // completing a window later. 2 MB offered, a small part of it let through.
      expect(heldAt).toBeLessThan(frames.length / 4);
      await Bun.sleep(1000);
      expect(lines.filter((l) => l.written !== undefined).at(-1)!.written).toBe(heldAt);
      process.kill(pid, "SIGCONT");
      stopped = false;
      await Promise.race([proc.exited, Bun.sleep(60_000)]);
      await reader;
      const done = lines.find((l) => l.done);
      expect(done).toMatchObject({ done: true, status: "0", written: frames.length });
      const ack = fromBinary(UploadResponseSchema, Buffer.from(done!.body!, "hex").subarray(5)).ack!;
      expect(ack.durableSeq).toBe(count);
    } finally {
      if (stopped) process.kill(pid, "SIGCONT");
    }
  } finally {
    await slow.gateway.close();
  }
}, 120_000);
