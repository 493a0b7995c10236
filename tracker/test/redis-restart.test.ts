/**
 * Redis going away mid-run: queries and new watches say UNAVAILABLE (they do not hang), JetStream
 * keeps what arrives meanwhile, and once Redis is back the tracker reconnects, catches up, and an
 * open watch receives the points sent during the outage.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { EventKind } from "../../gen/fleet/v1/tracker_pb";
import { testStack, type Stack } from "../../dev";
import { grpc, grpcClient, point, startTestTracker, uniqueName, unary, waitFor, watch, type TestTracker } from "./helpers";

let t: TestTracker;
let stack: Stack;
beforeAll(async () => {
  stack = await testStack(["nats", "redis"]);
  t = await startTestTracker();
});
afterAll(async () => {
  await stack.startService("redis");
  await t.close();
});

test("redis restart - queries say UNAVAILABLE meanwhile, then the tracker catches up and open watches get the missed points", async () => {
  const v = uniqueName("rr");
  const token = await t.token({ vehicles: [v] });
  const client = grpcClient(t.target);
  await t.publish([point(v, 1)]);
  await waitFor("seq 1", async () =>
    (await unary<{ vehicle: { position: { seq: number } } }>(client, "getVehicle", token, { vehicleId: v })).response?.vehicle.position
      .seq === 1
      ? true
      : undefined,
  );
  const w = watch(client, "watchVehicles", token, { vehicleIds: [v] });
  await w.until(2);

  await stack.stopService("redis");
  for (let seq = 2; seq <= 5; seq++) await t.publish([point(v, seq)]);
  const during = await unary(client, "getVehicle", token, { vehicleId: v });
  expect(during.error?.code).toBe(grpc.status.UNAVAILABLE);
  expect(during.error?.details).toContain("retry");
  const refused = await watch(client, "watchVehicles", token, { vehicleIds: [v] }).ended;
  expect(refused?.code).toBe(grpc.status.UNAVAILABLE);
  expect((await fetch(`${t.tracker.url}/healthz`)).status).toBe(503);

  await stack.startService("redis");
  // The open watch hears the points that arrived while Redis was down.
  await waitFor("seq 5 on the watch", () => (w.events.some((e) => e.vehicle?.position?.seq === 5) ? true : undefined), 15_000);
  const live = w.events.slice(2);
  expect(live.every((e) => e.kind === EventKind.MOVE)).toBe(true);
  expect(live.reduce((n, e) => n + 1 + e.coalesced, 0)).toBe(4);
  const after = await unary<{ vehicle: { position: { seq: number } } }>(client, "getVehicle", token, { vehicleId: v });
  expect(after.response?.vehicle.position.seq).toBe(5);
  expect((await fetch(`${t.tracker.url}/healthz`)).status).toBe(200);
  w.cancel();
  client.close();
}, 40_000);
