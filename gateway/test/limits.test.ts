/** Idle timeout, on a gateway with small limits. (Floods and backlogs: test/backlog.test.ts.) */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { create } from "@bufbuild/protobuf";
import { UploadRequestSchema } from "../../gen/fleet/v1/ingest_pb";
import { bearer, grpc, grpcClient, grpcUnary, point, startTestGateway, type TestGateway } from "./helpers";

let t: TestGateway;
let client: grpc.Client;
beforeAll(async () => {
  t = await startTestGateway({ GATEWAY_IDLE_TIMEOUT: "400ms" });
  client = grpcClient(t.target);
});
afterAll(async () => {
  client.close();
  await t.gateway.close();
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
