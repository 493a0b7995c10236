/**
 * A vehicle that reconnects before the ack of its broken stream came re-sends points whose first
 * send is still in flight: the new stream is answered as the first send is (durable, or failed),
 * never refused as if the seq were new and out of order. Batches linger 400 ms here, so the first
 * sends are still in flight when the second stream arrives.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { RejectReason } from "../../gen/fleet/v1/ingest_pb";
import { grpcClient, point, startTestGateway, uploadPoints, type TestGateway, type grpc } from "./helpers";

let t: TestGateway;
let client: grpc.Client;

beforeAll(async () => {
  t = await startTestGateway({ GATEWAY_BATCH_DELAY: "400ms" });
  client = grpcClient(t.target);
});
afterAll(async () => {
  client.close();
  await t.gateway.close();
});

test("resend - points re-sent while their first send is in flight are acked with it, stored once", async () => {
  const v = "resend-inflight";
  const token = await t.token(v);
  const first = uploadPoints(client, token, [point(v, 1), point(v, 2), point(v, 3)]);
  await Bun.sleep(100); // accepted, lingering in their batch
  const again = await uploadPoints(client, token, [point(v, 1), point(v, 2), point(v, 3), point(v, 4)]);
  const ack = again.response!.ack!;
  expect(ack.rejected).toEqual([]);
  expect(ack.durableSeq).toBe(4);
  expect(ack.accepted).toBe(4);
  expect((await first).response!.ack!.durableSeq).toBeGreaterThanOrEqual(3);
  expect((await t.stored()).filter((p) => p.vehicleId === v).map((p) => p.seq)).toEqual([1, 2, 3, 4]);
});

test("resend - a seq below the last accepted that was never sent is refused SEQ_SKIPPED, not stored", async () => {
  const v = "resend-gap";
  const token = await t.token(v);
  const first = uploadPoints(client, token, [point(v, 1), point(v, 5)]);
  await Bun.sleep(100);
  const late = await uploadPoints(client, token, [point(v, 3)]);
  const ack = late.response!.ack!;
  expect(ack.rejected.map((r) => [r.seq, r.reason])).toEqual([[3, RejectReason.SEQ_SKIPPED]]);
  expect(ack.rejected[0]!.message).toContain("seq 3 was skipped");
  expect((await first).response!.ack!.durableSeq).toBe(5);
  expect((await t.stored()).filter((p) => p.vehicleId === v).map((p) => p.seq)).toEqual([1, 5]);
});
