/** Rate limit and idle timeout, on a gateway with small limits. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { create } from "@bufbuild/protobuf";
import { UploadRequestSchema } from "../../gen/fleet/v1/ingest_pb";
import { bearer, grpc, grpcClient, grpcUnary, point, startTestGateway, uploadPoints, type TestGateway } from "./helpers";

let t: TestGateway;
let client: grpc.Client;
beforeAll(async () => {
  t = await startTestGateway({ GATEWAY_RATE_LIMIT: "5", GATEWAY_RATE_BURST: "20", GATEWAY_IDLE_TIMEOUT: "400ms" });
  client = grpcClient(t.target);
});
afterAll(async () => {
  client.close();
  await t.gateway.close();
});

test("rate limit - a flood ends RESOURCE_EXHAUSTED with retry info; points before it are durable and another vehicle still works", async () => {
  const v = "flood-1";
  const token = await t.token(v);
  const points = Array.from({ length: 60 }, (_, i) => point(v, i + 1));
  const r = await uploadPoints(client, token, points);
  expect(r.error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
  expect(r.error?.details).toContain("rate limit of 5 points/s");
  expect(r.error?.details).toMatch(/retry in \d/);
  expect(Number(r.error?.metadata.get("retry-after")[0])).toBeGreaterThanOrEqual(1);
  // The burst was accepted before the flood and is durable: Resume says how far.
  const resume = await grpcUnary<{ durableSeq: number }>(client, "resume", bearer(token), { $typeName: "fleet.v1.ResumeRequest", vehicleId: "" });
  expect(resume.response!.durableSeq).toBe(20);
  expect((await t.stored()).filter((p) => p.vehicleId === v)).toHaveLength(20);
  const other = await uploadPoints(client, await t.token("calm-1"), [point("calm-1", 1)]);
  expect(other.response!.ack!.durableSeq).toBe(1);
});

test("idle - a stream that sends nothing ends DEADLINE_EXCEEDED with a message", async () => {
  const started = Date.now();
  const err = await new Promise<grpc.ServiceError | null>((resolve) => {
    const call = (client as unknown as { upload(md: grpc.Metadata, cb: (e: grpc.ServiceError | null) => void): grpc.ClientWritableStream<unknown> }).upload(
      bearer(undefined),
      (e) => resolve(e),
    );
    void call;
  }).catch(() => null);
  // Unauthenticated calls fail first; use a token for the real idle case.
  expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
  const token = await t.token("idle-1");
  const idle = await new Promise<grpc.ServiceError | null>((resolve) => {
    const call = (client as unknown as { upload(md: grpc.Metadata, cb: (e: grpc.ServiceError | null) => void): grpc.ClientWritableStream<unknown> }).upload(
      bearer(token),
      (e) => resolve(e),
    );
    call.write(create(UploadRequestSchema, { position: point("idle-1", 1) }));
  });
  expect(idle?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
  expect(idle?.details).toContain("sent nothing");
  expect(Date.now() - started).toBeGreaterThanOrEqual(400);
  // The point sent before going quiet is durable.
  const resume = await grpcUnary<{ durableSeq: number }>(client, "resume", bearer(token), { $typeName: "fleet.v1.ResumeRequest", vehicleId: "" });
  expect(resume.response!.durableSeq).toBe(1);
});
