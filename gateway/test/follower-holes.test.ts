/**
 * A gateway learns from the stream what other gateways made durable. Per partition a gateway
 * publishes its batches pipelined (up to four at once), so a gateway that dies after seq 9's batch
 * failed may leave seq 10's batch stored: the stream then holds 8 and 10 but not 9. Another gateway
 * must not answer Resume with 10 (the vehicle would drop 9, which was never acked): it answers 8,
 * takes 9 when the vehicle sends it and tells 10 apart as already durable.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { jetstream } from "@nats-io/jetstream";
import { connect, headers } from "@nats-io/transport-node";
import { RejectReason } from "../../gen/fleet/v1/ingest_pb";
import { PositionBatchSchema } from "../../gen/fleet/v1/position_pb";
import { HEADERS, natsServers, partitionOf } from "../../lib/nats";
import { bearer, grpcClient, grpcUnary, point, startTestGateway, uploadPoints, type TestGateway, type grpc } from "./helpers";

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

/** Publishes points as another gateway's batch would be, straight into the test gateway's stream. */
async function publishAsOtherGateway(vehicleId: string, seqs: number[]) {
  const nc = await connect({ servers: natsServers(t.natsUrl) });
  try {
    const h = headers();
    h.set(HEADERS.gateway, "a-dying-gateway");
    const batch = create(PositionBatchSchema, { positions: seqs.map((seq) => point(vehicleId, seq)) });
    await jetstream(nc).publish(`${t.stream}.pos.${partitionOf(vehicleId, t.config.partitions)}`, toBinary(PositionBatchSchema, batch), {
      headers: h,
    });
  } finally {
    await nc.close();
  }
}

const resume = async (vehicleId: string) => {
  const r = await grpcUnary<{ durableSeq: bigint | number }>(client, "resume", bearer(await t.token(vehicleId)), {
    $typeName: "fleet.v1.ResumeRequest",
    vehicleId,
  });
  expect(r.error).toBeUndefined();
  return Number(r.response!.durableSeq);
};

test("follower - Resume does not answer past a seq missing from the stream; the vehicle's re-send fills it, stored once", async () => {
  const v = "hole-truck";
  await publishAsOtherGateway(v, [1, 2, 3, 4, 5, 6, 7, 8]);
  // Seq 9's batch failed on the other gateway, seq 10's was stored.
  await publishAsOtherGateway(v, [10]);
  expect(await resume(v)).toBe(8);

  const token = await t.token(v);
  const up = await uploadPoints(client, token, [point(v, 9), point(v, 10), point(v, 11)]);
  expect(up.error).toBeUndefined();
  const ack = up.response!.ack!;
  expect(ack.rejected.map((r) => [r.seq, r.reason])).toEqual([[10, RejectReason.DUPLICATE]]);
  expect(ack.rejected[0]!.message).toContain("seq 10 is already durable");
  expect(Number(ack.durableSeq)).toBe(11);
  expect(await resume(v)).toBe(11);
  const stored = (await t.stored()).filter((p) => p.vehicleId === v).map((p) => p.seq);
  expect(stored.sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
});
