/**
 * Nothing acked is silently dropped (issue 14, section 7): a second point of a vehicle at the time
 * of its previous one is refused with a reason (history and the tracker keep the first), and a
 * point that fills a gap below the durable seq is told apart from a DUPLICATE. Both hold across a
 * gateway restart, which rebuilds what it needs from the stream over the duplicate window.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { RejectReason } from "../../gen/fleet/v1/ingest_pb";
import { grpcClient, point, startTestGateway, uploadPoints, type TestGateway, type grpc } from "./helpers";

let t: TestGateway;
let client: grpc.Client;
beforeAll(async () => {
  t = await startTestGateway();
  client = grpcClient(t.target);
});
afterAll(async () => {
  client.close();
  await t.gateway.close();
});

/** A second gateway on the same stream, as after a restart: it knows the vehicles from the stream only. */
async function restarted(): Promise<{ t: TestGateway; client: grpc.Client; close(): Promise<void> }> {
  const t2 = await startTestGateway({}, { stream: t.stream, subjectPrefix: `${t.stream}.pos.` });
  t2.stored = t.stored;
  const c = grpcClient(t2.target, { own: true });
  return {
    t: t2,
    client: c,
    async close() {
      c.close();
      await t2.gateway.close();
    },
  };
}

test("same instant - a second point in the millisecond of the vehicle's previous one is refused DUPLICATE_TIME; the first is stored", async () => {
  const v = "same-time";
  const token = await t.token(v);
  const second = BigInt(Math.floor(Date.now() / 1000) - 5);
  const at = { seconds: second, nanos: 250_000 };
  // 0.4 ms later: another instant for PostgreSQL, the same one for the tracker (whole milliseconds).
  const near = { seconds: second, nanos: 650_000 };
  const r = await uploadPoints(client, token, [
    point(v, 1, { recordedAt: at, lat: 52.5 }),
    point(v, 2, { recordedAt: near, lat: 52.6 }),
    point(v, 3),
  ]);
  const ack = r.response!.ack!;
  expect(ack.rejected.map((x) => [x.seq, x.reason])).toEqual([[2, RejectReason.DUPLICATE_TIME]]);
  expect(ack.rejected[0]!.message).toContain("is the millisecond of seq 1 already");
  expect(ack.durableSeq).toBe(3);
  const stored = (await t.stored()).filter((p) => p.vehicleId === v);
  expect(stored.map((p) => [p.seq, p.lat])).toEqual([
    [1, 52.5],
    [3, expect.any(Number)],
  ]);
  // After a restart the gateway knows the last point's time from the stream.
  const g = await restarted();
  try {
    const last = stored.at(-1)!.recordedAt!;
    const again = await uploadPoints(g.client, token, [point(v, 4, { recordedAt: last })]);
    expect(again.response!.ack!.rejected.map((x) => [x.seq, x.reason])).toEqual([[4, RejectReason.DUPLICATE_TIME]]);
  } finally {
    await g.close();
  }
});

test("gap - a seq below the durable seq that was never sent is refused SEQ_SKIPPED (not DUPLICATE), also after a restart", async () => {
  const v = "gap-fill";
  const token = await t.token(v);
  expect((await uploadPoints(client, token, [point(v, 1), point(v, 2), point(v, 6)])).response!.ack!.durableSeq).toBe(6);
  const late = await uploadPoints(client, token, [point(v, 4), point(v, 2)]);
  expect(late.response!.ack!.rejected.map((x) => [x.seq, x.reason])).toEqual([
    [4, RejectReason.SEQ_SKIPPED],
    [2, RejectReason.DUPLICATE],
  ]);
  expect(late.response!.ack!.rejected[0]!.message).toContain("not stored");
  const g = await restarted();
  try {
    const again = await uploadPoints(g.client, token, [point(v, 5), point(v, 6)]);
    expect(again.response!.ack!.rejected.map((x) => [x.seq, x.reason])).toEqual([
      [5, RejectReason.SEQ_SKIPPED],
      [6, RejectReason.DUPLICATE],
    ]);
  } finally {
    await g.close();
  }
  expect((await t.stored()).filter((p) => p.vehicleId === v).map((p) => p.seq)).toEqual([1, 2, 6]);
});
