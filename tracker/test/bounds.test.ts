/**
 * What one caller can cost the tracker: Nearby and area snapshots read what the token grants, or at
 * most TRACKER_SCAN_MAX candidates, whatever the circle holds; area watches never subscribe to every
 * event; watches per token are bounded. Against a real Redis holding 40,000 live vehicles, loaded
 * straight through the store's write path (the consumer's newer-wins.lua) to keep the test quick.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import Redis from "ioredis";
import type { NearbyResponse } from "../../gen/fleet/v1/tracker_pb";
import { EventKind, TrackerService } from "../../gen/fleet/v1/tracker_pb";
import { PointBlob } from "../point-blob";
import { createStore } from "../store";
import { grpc, grpcClient, point, startTestTracker, uniqueName, unary, watch, type TestTracker } from "./helpers";

const VEHICLES = 40_000;
let t: TestTracker;
let client: grpc.Client;
let redis: Redis;
const fleet = uniqueName("crowd");
const mine = `${fleet}-mine`;
const ids: string[] = [];
/** A small fleet's 20 vehicles, scattered among the 40,000 of the crowd. */
const small = uniqueName("small");
const smallIds = Array.from({ length: 20 }, (_, k) => `${small}-${k}`);
let store: ReturnType<typeof createStore>;
beforeAll(async () => {
  t = await startTestTracker({ TRACKER_CONSUME: "false", TRACKER_WATCHES_PER_TOKEN: "3", TRACKER_WATCHES_PER_CONNECTION: "4" });
  client = grpcClient(t.target);
  redis = new Redis(t.redisUrl);
  store = createStore({ redis, prefix: t.prefix });
  // A 200 × 200 grid around (50, 10), ~550 m apart: all within 200 km of its centre.
  for (let i = 0; i < VEHICLES; i++) ids.push(`${fleet}-${i}`);
  const now = Date.now();
  for (let from = 0; from < VEHICLES; from += 2000) {
    const blob = new PointBlob();
    for (let i = from; i < Math.min(VEHICLES, from + 2000); i++) {
      blob.addPosition(point(ids[i]!, 1, { fleetId: fleet, lat: 49.45 + (i % 200) * 0.0055, lon: 9.2 + Math.floor(i / 200) * 0.008 }), now);
    }
    await store.applyBatch(blob, now);
  }
  const blob = new PointBlob();
  blob.addPosition(point(mine, 1, { fleetId: uniqueName("own"), lat: 50.9, lon: 11.2 }), now);
  smallIds.forEach((id, k) => {
    blob.addPosition(point(id, 1, { fleetId: small, lat: 49.5 + (k % 5) * 0.2 + 0.001, lon: 9.3 + Math.floor(k / 5) * 0.3 + 0.001 }), now);
  });
  await store.applyBatch(blob, now);
}, 60_000);
afterAll(async () => {
  await redis.config("SET", "slowlog-log-slower-than", "10000");
  redis.disconnect();
  client.close();
  await t.close();
});

const wide = { area: { shape: { case: "circle", value: { lat: 50, lon: 10, radiusM: 200_000 } } } };

const commandCalls = async () => {
  const calls = new Map<string, number>();
  for (const m of (await redis.info("commandstats")).matchAll(/cmdstat_(\w+):calls=(\d+)/g)) calls.set(m[1]!, Number(m[2]));
  return calls;
};

/**
 * Runs `call`; returns it with the Redis commands that took over `thresholdUs` meanwhile (SLOWLOG)
 * and how many of each command ran (INFO commandstats, counted inside scripts too). The work is the
 * sure measure; the time is loose, as the machine is shared by other tests (the bounded search took
 * 40–90 ms of Redis with the machine loaded 3×, the unbounded one 0.5–0.9 s).
 */
async function measured<T>(
  call: () => Promise<T>,
  thresholdUs = 150_000,
): Promise<{ result: T; slow: string[]; calls: (name: string) => number }> {
  await redis.config("SET", "slowlog-log-slower-than", String(thresholdUs));
  await redis.slowlog("RESET");
  const before = await commandCalls();
  const result = await call();
  const after = await commandCalls();
  const log = (await redis.slowlog("GET", 100)) as [number, number, number, string[]][];
  return {
    result,
    slow: log.map(([, , us, args]) => `${args.slice(0, 2).join(" ")}: ${us} µs`),
    calls: (name) => (after.get(name) ?? 0) - (before.get(name) ?? 0),
  };
}

describe("bounds", () => {
  test("nearby - a token granting one vehicle over 40,000 in a 200 km circle reads its grant: found, nothing else, no slow Redis command", async () => {
    const token = await t.token({ vehicles: [mine] });
    const { result, slow, calls } = await measured(() => unary<NearbyResponse>(client, "nearby", token, { ...wide, limit: 10 }));
    expect(result.error).toBeUndefined();
    expect(result.response!.vehicles.map((v) => v.vehicle!.position!.vehicleId)).toEqual([mine]);
    expect(calls("geosearch")).toBe(0);
    expect(calls("hget") + calls("hmget")).toBeLessThanOrEqual(2);
    expect(slow).toEqual([]);
  });

  test("nearby - a fleet token's search reads at most TRACKER_SCAN_MAX candidates; past it RESOURCE_EXHAUSTED naming the limit", async () => {
    const token = await t.token({ fleets: [fleet] });
    const near = await measured(() => unary<NearbyResponse>(client, "nearby", token, { ...wide, limit: 5 }));
    expect(near.result.response!.vehicles.length).toBe(5);
    expect(near.result.response!.vehicles.every((v) => v.vehicle!.position!.fleetId === fleet)).toBe(true);
    // A status none of them has: every candidate is turned away, the search stops at the bound.
    const none = await measured(() => unary<NearbyResponse>(client, "nearby", token, { ...wide, statuses: [4], limit: 5 }));
    expect(none.result.error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(none.result.error?.details).toContain("TRACKER_SCAN_MAX");
    expect(none.result.error?.details).toContain("narrow the area");
    expect(none.calls("hget")).toBeLessThanOrEqual(2 * t.config.scanMax);
    expect([...near.slow, ...none.slow]).toEqual([]);
  });

  test("nearby - a fleet token reads its fleet's own GEO set: 20 vehicles among 40,000 of another fleet are all found, little work, no slow command", async () => {
    const token = await t.token({ fleets: [small] });
    const near = await measured(() => unary<NearbyResponse>(client, "nearby", token, { ...wide, limit: 100 }));
    expect(near.result.error).toBeUndefined();
    expect(near.result.response!.vehicles.map((v) => v.vehicle!.position!.vehicleId).sort()).toEqual([...smallIds].sort());
    // Each wider circle reads the nearer members again: a few times the fleet, not the 40,000.
    expect(near.calls("hget")).toBeLessThanOrEqual(5 * smallIds.length);
    expect(near.calls("geosearch")).toBeLessThanOrEqual(12);
    // A status none of them has: every one of them read, still no RESOURCE_EXHAUSTED, nothing found.
    const none = await measured(() => unary<NearbyResponse>(client, "nearby", token, { ...wide, statuses: [4], limit: 5 }));
    expect(none.result.error).toBeUndefined();
    expect(none.result.response!.vehicles).toEqual([]);
    expect(none.calls("hget")).toBeLessThanOrEqual(5 * smallIds.length);
    // Two fleets: each searched in its own set, the nearest of both.
    const both = await unary<NearbyResponse>(client, "nearby", await t.token({ fleets: [small, fleet] }), {
      area: { shape: { case: "circle", value: { lat: 49.5, lon: 9.3, radiusM: 5000 } } },
      limit: 3,
    });
    expect(both.error).toBeUndefined();
    expect(both.response!.vehicles.map((v) => v.vehicle!.position!.vehicleId)[0]).toBe(smallIds[0]);
    expect(both.response!.vehicles.length).toBe(3);
    // A snapshot of the whole circle: the 20, nothing else.
    const snap = await measured(async () => {
      const w = watch(client, "watchArea", token, wide);
      await w.until(smallIds.length + 1);
      return w;
    });
    const area = snap.result;
    area.cancel();
    expect(
      area.events
        .filter((e) => e.kind === EventKind.SNAPSHOT)
        .map((e) => e.vehicle!.position!.vehicleId)
        .sort(),
    ).toEqual([...smallIds].sort());
    expect(snap.calls("hget")).toBeLessThanOrEqual(5 * smallIds.length);
    expect([...near.slow, ...none.slow, ...snap.slow]).toEqual([]);
  });

  test("store - a vehicle leaves its fleet's GEO set when it changes fleet (even twice in one call) and when it goes stale", async () => {
    const set = (f: string) => `${store.keys.fleetGeoPrefix}${f}`;
    const other = uniqueName("other");
    const [moved, twice, stale] = [uniqueName("moved"), uniqueName("twice"), uniqueName("stale")];
    const now = Date.now();
    const first = new PointBlob();
    for (const id of [moved, twice]) first.addPosition(point(id, 1, { fleetId: small, lat: 50, lon: 10 }), now);
    first.addPosition(point(stale, 1, { fleetId: small, lat: 50, lon: 10 }), now - 600_000);
    await store.applyBatch(first, now);
    for (const id of [moved, twice, stale]) expect(await redis.zscore(set(small), id)).not.toBeNull();
    const second = new PointBlob();
    second.addPosition(point(moved, 2, { fleetId: other, lat: 50, lon: 10 }), now);
    // To the other fleet and back within one script call: in the first fleet's set only.
    second.addPosition(point(twice, 2, { fleetId: other, lat: 50, lon: 10 }), now);
    second.addPosition(point(twice, 3, { fleetId: small, lat: 50, lon: 10 }), now);
    await store.applyBatch(second, now);
    expect(await redis.zscore(set(small), moved)).toBeNull();
    expect(await redis.zscore(set(other), moved)).not.toBeNull();
    expect(await redis.zscore(set(small), twice)).not.toBeNull();
    expect(await redis.zscore(set(other), twice)).toBeNull();
    const gone = await store.sweep(now - 300_000);
    expect(gone.map((g) => g.vehicleId)).toEqual([stale]);
    expect(await redis.zscore(set(small), stale)).toBeNull();
    expect(await redis.zscore(store.keys.geo, stale)).toBeNull();
  });

  test("watch - on connect's path (the Connect protocol over HTTP/2) a connection is counted too", async () => {
    const transport = () => createConnectTransport({ baseUrl: t.tracker.url, httpVersion: "2" });
    const [one, two] = [createClient(TrackerService, transport()), createClient(TrackerService, transport())];
    const tokens = await Promise.all([0, 1, 2, 3, 4].map((i) => t.token({ vehicles: [mine], subject: `connect-${i}` })));
    const controllers = tokens.map(() => new AbortController());
    const opened = async (c: typeof one, i: number) => {
      const it = c
        .watchVehicles({ vehicleIds: [mine] }, { headers: { authorization: `Bearer ${tokens[i]}` }, signal: controllers[i]!.signal })
        [Symbol.asyncIterator]();
      return (await it.next()).value;
    };
    for (let i = 0; i < 4; i++) expect(await opened(one, i)).toBeDefined();
    const fifth = await opened(one, 4).catch((e: unknown) => ConnectError.from(e));
    expect(fifth).toBeInstanceOf(ConnectError);
    expect((fifth as ConnectError).code).toBe(Code.ResourceExhausted);
    expect((fifth as ConnectError).rawMessage).toContain("TRACKER_WATCHES_PER_CONNECTION 4");
    const elsewhere = new AbortController();
    const it = two
      .watchVehicles({ vehicleIds: [mine] }, { headers: { authorization: `Bearer ${tokens[4]}` }, signal: elsewhere.signal })
      [Symbol.asyncIterator]();
    expect((await it.next()).value).toBeDefined();
    elsewhere.abort();
    for (const c of controllers) c.abort();
  });

  test("area - a snapshot reads the grant (one vehicle) or refuses an area past the bound; no slow Redis command", async () => {
    const oneToken = await t.token({ vehicles: [mine] });
    // The watch starts inside the measure, so that its snapshot is counted.
    const {
      result: one,
      slow,
      calls,
    } = await measured(async () => {
      const w = watch(client, "watchArea", oneToken, wide);
      await w.until(2);
      return w;
    });
    expect(calls("geosearch")).toBe(0);
    expect(one.events.map((e) => [EventKind[e.kind], e.vehicle?.position?.vehicleId])).toEqual([
      ["SNAPSHOT", mine],
      ["SNAPSHOT_END", undefined],
    ]);
    one.cancel();
    const crowd = watch(client, "watchArea", await t.token({ fleets: [fleet] }), wide);
    const refused = await measured(() => crowd.ended);
    expect(refused.result?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(refused.result?.details).toContain("TRACKER_SCAN_MAX");
    expect(refused.calls("hget")).toBeLessThanOrEqual(2 * t.config.scanMax);
    expect([...slow, ...refused.slow]).toEqual([]);
  });

  test("area - a circle at lat 89 is INVALID_ARGUMENT saying why (it would take every event on earth)", async () => {
    const err = (await watch(client, "watchArea", await t.token({ all: true }), {
      area: { shape: { case: "circle", value: { lat: 89, lon: 0, radiusM: 200_000 } } },
    }).ended)!;
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toContain("too near a pole");
  });

  test("watch - a token holds at most TRACKER_WATCHES_PER_TOKEN watches at once; past it RESOURCE_EXHAUSTED, and a closed one frees its place", async () => {
    const token = await t.token({ vehicles: [mine] });
    const open = [0, 1, 2].map(() => watch(client, "watchVehicles", token, { vehicleIds: [mine] }));
    for (const w of open) await w.until(2);
    const fourth = (await watch(client, "watchVehicles", token, { vehicleIds: [mine] }).ended)!;
    expect(fourth.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(fourth.details).toContain("TRACKER_WATCHES_PER_TOKEN 3");
    // The same token written another way is the same token.
    const md = new grpc.Metadata();
    md.set("authorization", `bearer ${token}`);
    const respelled = await new Promise<grpc.ServiceError | null>((resolve) => {
      const call = (
        client as unknown as { watchVehicles(m: unknown, md: grpc.Metadata): grpc.ClientReadableStream<unknown> }
      ).watchVehicles({ vehicleIds: [mine] }, md);
      call.on("data", () => {});
      call.on("error", resolve);
      call.on("end", () => resolve(null));
    });
    expect(respelled?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    // Another token is not counted against this one.
    const other = watch(client, "watchArea", await t.token({ vehicles: [mine], subject: "other" }), wide);
    await other.until(2);
    other.cancel();
    open[0]!.cancel();
    await open[0]!.ended;
    await Bun.sleep(50);
    const again = watch(client, "watchVehicles", token, { vehicleIds: [mine] });
    await again.until(2);
    again.cancel();
    for (const w of open.slice(1)) w.cancel();
  });

  test("watch - a connection holds at most TRACKER_WATCHES_PER_CONNECTION watches, whatever its tokens; another connection is not counted", async () => {
    // A pool of its own each: grpc-js clients with one target and options share a connection otherwise.
    const [one, two] = [0, 1].map(() => grpcClient(t.target, { "grpc.use_local_subchannel_pool": 1 })) as [grpc.Client, grpc.Client];
    const tokens = await Promise.all([0, 1, 2, 3, 4].map((i) => t.token({ vehicles: [mine], subject: `conn-${i}` })));
    const open = tokens.slice(0, 4).map((token) => watch(one, "watchVehicles", token, { vehicleIds: [mine] }));
    for (const w of open) await w.until(2);
    const fifth = (await watch(one, "watchVehicles", tokens[4]!, { vehicleIds: [mine] }).ended)!;
    expect(fifth.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(fifth.details).toContain("TRACKER_WATCHES_PER_CONNECTION 4");
    expect(fifth.details).toContain("open another connection");
    const area = (await watch(one, "watchArea", tokens[4]!, wide).ended)!;
    expect(area.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    // The same token on another connection is answered.
    const elsewhere = watch(two, "watchVehicles", tokens[4]!, { vehicleIds: [mine] });
    await elsewhere.until(2);
    elsewhere.cancel();
    // A closed watch frees its place on the connection.
    open[0]!.cancel();
    await open[0]!.ended;
    await Bun.sleep(50);
    const again = watch(one, "watchVehicles", tokens[4]!, { vehicleIds: [mine] });
    await again.until(2);
    again.cancel();
    for (const w of open.slice(1)) w.cancel();
    one.close();
    two.close();
  });
});
