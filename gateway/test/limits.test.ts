/** Idle timeout, on a gateway with small limits. (Floods and backlogs: test/backlog.test.ts.) */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { create } from "@bufbuild/protobuf";
import { UploadRequestSchema } from "../../gen/fleet/v1/ingest_pb";
import { RawH2 } from "../../test/raw-h2";
import { bearer, grpc, grpcClient, grpcUnary, IngestClient, point, startTestGateway, type TestGateway } from "./helpers";

const fixtures = join(import.meta.dir, "..", "..", "test", "fixtures");
let t: TestGateway;
let tls: TestGateway;
let client: grpc.Client;
beforeAll(async () => {
  t = await startTestGateway({ GATEWAY_IDLE_TIMEOUT: "400ms" });
  tls = await startTestGateway({
    GATEWAY_IDLE_TIMEOUT: "400ms",
    GATEWAY_TLS_CERT: join(fixtures, "localhost-cert.pem"),
    GATEWAY_TLS_KEY: join(fixtures, "localhost-key.pem"),
  });
  client = grpcClient(t.target);
}, 60_000);
afterAll(async () => {
  client.close();
  await t.gateway.close();
  await tls.gateway.close();
});

test("idle - a stream that sends nothing ends DEADLINE_EXCEEDED with a message", async () => {
  const started = Date.now();
  const err = await new Promise<grpc.ServiceError | null>((resolve) => {
    const call = (
      client as unknown as { upload(md: grpc.Metadata, cb: (e: grpc.ServiceError | null) => void): grpc.ClientWritableStream<unknown> }
    ).upload(bearer(undefined), (e) => resolve(e));
    void call;
  }).catch(() => null);
  // Unauthenticated calls fail first; use a token for the real idle case.
  expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
  const token = await t.token("idle-1");
  const idle = await new Promise<grpc.ServiceError | null>((resolve) => {
    const call = (
      client as unknown as { upload(md: grpc.Metadata, cb: (e: grpc.ServiceError | null) => void): grpc.ClientWritableStream<unknown> }
    ).upload(bearer(token), (e) => resolve(e));
    call.write(create(UploadRequestSchema, { position: point("idle-1", 1) }));
  });
  expect(idle?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
  expect(idle?.details).toContain("sent nothing");
  expect(Date.now() - started).toBeGreaterThanOrEqual(400);
  // The point sent before going quiet is durable.
  const resume = await grpcUnary<{ durableSeq: number }>(client, "resume", bearer(token), {
    $typeName: "fleet.v1.ResumeRequest",
    vehicleId: "",
  });
  expect(resume.response!.durableSeq).toBe(1);
});

describe.each(["h2c", "TLS"])("over %s", (transport) => {
  test("idle - a connection whose stream keeps sending is not cut, however long past the idle timeout", async () => {
    const gw = transport === "TLS" ? tls : t;
    const vehicle = `busy-${transport}`;
    const token = await gw.token(vehicle);
    // Its own connection, so that nothing else keeps it busy.
    const own =
      transport === "TLS"
        ? new IngestClient(`localhost:${gw.gateway.port}`, grpc.credentials.createSsl(readFileSync(join(fixtures, "localhost-cert.pem"))), {
            "grpc.use_local_subchannel_pool": 1,
          })
        : grpcClient(gw.target, { own: true });
    try {
      const result = await new Promise<grpc.ServiceError | null>((resolve) => {
        const call = (
          own as unknown as { upload(md: grpc.Metadata, cb: (e: grpc.ServiceError | null) => void): grpc.ClientWritableStream<unknown> }
        ).upload(bearer(token), (e) => resolve(e));
        let seq = 0;
        // A point every 150 ms for 2 s: five times the 400 ms idle timeout, never idle 400 ms.
        const timer = setInterval(() => {
          call.write(create(UploadRequestSchema, { position: point(vehicle, ++seq) }));
          if (seq >= 14) {
            clearInterval(timer);
            call.end();
          }
        }, 150);
      });
      expect(result).toBeNull();
      const resume = await grpcUnary<{ durableSeq: number }>(own, "resume", bearer(token), {
        $typeName: "fleet.v1.ResumeRequest",
        vehicleId: "",
      });
      expect(resume.response!.durableSeq).toBe(14);
    } finally {
      own.close();
    }
  });
});

test("idle - an HTTP/2 connection that carries nothing is closed after twice the idle timeout", async () => {
  const h2 = await RawH2.connect(t.gateway.port);
  const opened = Date.now();
  try {
    while (!h2.closed && Date.now() - opened < 5_000) await Bun.sleep(50);
    expect(h2.closed).toBe(true);
    // 2 × 400 ms, with room for a busy machine.
    expect(Date.now() - opened).toBeGreaterThanOrEqual(700);
    expect(Date.now() - opened).toBeLessThan(3_000);
  } finally {
    h2.socket.destroy();
  }
});
