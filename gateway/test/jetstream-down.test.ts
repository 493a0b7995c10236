/** JetStream stops under the gateway: calls fail UNAVAILABLE, nothing unstored is acked, and it recovers. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { testStack, type Stack } from "../../dev";
import { bearer, grpc, grpcClient, grpcUnary, point, startTestGateway, uploadPoints, type TestGateway } from "./helpers";

let t: TestGateway;
let stack: Stack;
let client: grpc.Client;
beforeAll(async () => {
  stack = await testStack(["nats"]);
  t = await startTestGateway();
  client = grpcClient(t.target);
});
afterAll(async () => {
  client.close();
  await t.gateway.close();
  await stack.startService("nats");
});

async function until(check: () => Promise<boolean>, timeoutMs: number) {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await Bun.sleep(50);
  }
}

test("jetstream down - calls end UNAVAILABLE, acked points are in the stream after the restart, resume continues", async () => {
  const v = "down-1";
  const token = await t.token(v);
  const before = await uploadPoints(client, token, [point(v, 1), point(v, 2), point(v, 3)]);
  expect(before.response!.ack!.durableSeq).toBe(3);

  await stack.stopService("nats");
  const during = await uploadPoints(client, token, [point(v, 4), point(v, 5)]);
  expect(during.error?.code).toBe(grpc.status.UNAVAILABLE);
  expect(during.error?.details).toContain("positions store unavailable, retry with backoff");
  await until(async () => (await fetch(`${t.gateway.url}/healthz`)).status === 503, 30_000);
  // The process lives and answers what it knows.
  const resume = await grpcUnary<{ durableSeq: number }>(client, "resume", bearer(token), {
    $typeName: "fleet.v1.ResumeRequest",
    vehicleId: "",
  });
  expect(resume.response!.durableSeq).toBe(3);

  await stack.startService("nats");
  await until(async () => (await fetch(`${t.gateway.url}/healthz`)).status === 200, 30_000);
  const stored = (await t.stored()).filter((p) => p.vehicleId === v).map((p) => p.seq);
  for (const seq of [1, 2, 3]) expect(stored).toContain(seq);

  // The vehicle resends what was not acked.
  const after = await uploadPoints(client, token, [point(v, 4), point(v, 5)]);
  expect(after.error).toBeUndefined();
  expect(after.response!.ack!.durableSeq).toBe(5);
}, 90_000);
