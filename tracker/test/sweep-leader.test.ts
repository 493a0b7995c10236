import { afterAll, beforeAll, expect, test } from "bun:test";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createTracker, type Tracker } from "../tracker";
import { point, startTestTracker, uniqueName, type TestTracker } from "./helpers";

const INTERVAL = 150;
let t: TestTracker;
let second: Tracker;
beforeAll(async () => {
  t = await startTestTracker({ FLEET_LEADER_INTERVAL: `${INTERVAL}ms`, TRACKER_SWEEP_INTERVAL: "100ms" });
  // A second tracker on the same stream, consumer and Redis keys.
  second = await createTracker({ config: t.config, stream: t.stream, subjects: `${t.stream}.pos.>`, prefix: t.prefix });
});
afterAll(async () => {
  await second?.close();
  await t?.close();
});

async function metric(tracker: Tracker, name: string): Promise<number> {
  const text = await tracker.registry.getSingleMetricAsString(name);
  return Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text)?.[1] ?? Number.NaN);
}

/** Points this tracker applied to Redis. */
async function applied(tracker: Tracker): Promise<number> {
  const text = await tracker.registry.getSingleMetricAsString("tracker_points_total");
  return Number(/^tracker_points_total\{[^}]*result="applied"[^}]*\} (\S+)$/m.exec(text)?.[1] ?? 0);
}

async function until(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 5000): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (await check()) return Date.now() - t0;
    await Bun.sleep(10);
  }
  throw new Error(`timed out waiting for ${what}`);
}

test("sweep - of two trackers one sweeps; the leader cut off from Redis (it renews nothing), the other sweeps once its lease ran out", async () => {
  const a = t.tracker;
  await until(() => a.leader.isLeader() || second.leader.isLeader(), "a leader");
  for (const end = Date.now() + 6 * INTERVAL; Date.now() < end; await Bun.sleep(5)) {
    expect(a.leader.isLeader() && second.leader.isLeader()).toBe(false);
  }
  // Start: startTestTracker's is the one that leads when it was first; whichever it is, only it sweeps.
  const [first, other] = a.leader.isLeader() ? [a, second] : [second, a];
  expect(await metric(first, "tracker_sweeps_total")).toBeGreaterThan(0);
  expect(await metric(other, "tracker_sweeps_total")).toBe(0);
  expect(await metric(first, "fleet_leader")).toBe(1);

  // A vehicle that goes stale 2 s from now, stored before the leader dies (a dead tracker's consumer takes nothing more).
  const v = uniqueName("stale");
  await t.publish([
    point(v, 1, { fleetId: uniqueName("f"), lat: 1, lon: 1, receivedAt: timestampFromMs(Date.now() - t.config.staleAfter + 2000) }),
  ]);
  await until(async () => (await applied(a)) + (await applied(second)) >= 1, "the point stored");

  // The leader dies to Redis: its lease stays until its TTL (3 intervals), then the other takes it.
  first.redis.disconnect();
  const took = await until(() => other.leader.isLeader(), "the other tracker to lead");
  expect(took).toBeLessThan(4 * INTERVAL + 500);
  expect(first.leader.isLeader()).toBe(false);
  // And the new leader's timer sweeps: the vehicle goes offline by itself.
  await until(async () => (await metric(other, "tracker_vehicles_gone_offline_total")) >= 1, "the stale vehicle swept offline");
}, 20_000);
