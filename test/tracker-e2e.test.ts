/**
 * End to end: a vehicle uploads through the gateway (grpc-js), the gateway batches into JetStream,
 * the tracker consumes into Redis and fans out on NATS, and a watcher (grpc-js) sees the points.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { grpcClient as gatewayClient, point, startTestGateway, uploadPoints, type TestGateway } from "../gateway/test/helpers";
import { EventKind } from "../gen/fleet/v1/tracker_pb";
import { mintWatchToken, tokenKeys } from "../lib/auth";
import { loadConfig } from "../lib/config";
import { testStack } from "../dev";
import { createTracker, type Tracker } from "../tracker/tracker";
import { grpcClient as trackerClient, uniqueName, watch } from "../tracker/test/helpers";

let gw: TestGateway;
let tracker: Tracker;
beforeAll(async () => {
  const stack = await testStack(["nats", "redis"]);
  gw = await startTestGateway();
  const config = loadConfig({
    FLEET_JWT_SECRET: gw.config.secret,
    TRACKER_PORT: "0",
    NATS_URL: stack.natsUrl,
    REDIS_URL: stack.redisUrl,
    LOG_LEVEL: "error",
  });
  tracker = await createTracker({ config, stream: gw.stream, subjects: `${gw.stream}.pos.>`, prefix: `${gw.stream}:` });
});
afterAll(async () => {
  await tracker.close();
  await gw.gateway.close();
});

test("e2e - vehicle → gateway → JetStream → tracker → watcher: a vehicle watch and an area watch see every point", async () => {
  const v = uniqueName("e2e");
  const fleet = uniqueName("fleet");
  const watchToken = await mintWatchToken(tokenKeys(gw.config), { fleets: [fleet] });
  const tc = trackerClient(tracker.url.replace("http://", ""));
  const byId = watch(tc, "watchVehicles", await mintWatchToken(tokenKeys(gw.config), { vehicles: [v] }), { vehicleIds: [v] });
  const byArea = watch(tc, "watchArea", watchToken, {
    area: { shape: { case: "circle", value: { lat: 52.52, lon: 13.405, radiusM: 3000 } } },
  });
  await byId.until(1);
  await byArea.until(1);

  const gc = gatewayClient(gw.target);
  const up = await uploadPoints(
    gc,
    await gw.token(v, fleet),
    [1, 2, 3].map((seq) => point(v, seq)),
  );
  expect(up.error).toBeUndefined();
  for (const w of [byId, byArea]) {
    await waitUntilSeq(w.events, 3);
    const live = w.events.slice(1);
    // Every point accounted for, in order: sent, or counted as coalesced into a later one (the
    // gateway put all three into one JetStream message, so they arrive at once).
    expect(live[0]!.kind).toBe(EventKind.ENTER);
    expect(live.slice(1).every((e) => e.kind === EventKind.MOVE)).toBe(true);
    expect(live.reduce((n, e) => n + 1 + e.coalesced, 0)).toBe(3);
    expect(live.at(-1)!.vehicle!.position!.seq).toBe(3);
    // The fleet comes from the vehicle's token, set by the gateway.
    expect(live[0]!.vehicle!.position!.fleetId).toBe(fleet);
  }
  byId.cancel();
  byArea.cancel();
  gc.close();
  tc.close();
});

async function waitUntilSeq(events: { vehicle?: { position?: { seq: number } } }[], seq: number) {
  const until = Date.now() + 10_000;
  while (!events.some((e) => e.vehicle?.position?.seq === seq)) {
    if (Date.now() > until) throw new Error(`seq ${seq} never arrived`);
    await Bun.sleep(20);
  }
}
