/**
 * The live map's event handling (web/map-state.ts) fed by a real tracker through client/live's
 * watchArea on Connect-Web's transport, as the page's app.ts feeds it: snapshot, moves with
 * trails, exits, offline, a new watch after a while away.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { TrackerService } from "../../gen/fleet/v1/tracker_pb";
import { createLiveClient } from "../../client/live";
import { point, startTestTracker, uniqueName, waitFor, type TestTracker } from "../../tracker/test/helpers";
import { createMapState, type MapState } from "../map-state";

let t: TestTracker;
let client: Client<typeof TrackerService>;
beforeAll(async () => {
  t = await startTestTracker();
  client = createClient(TrackerService, createConnectTransport({ baseUrl: t.tracker.url, useBinaryFormat: true }));
});
afterAll(() => t.close());

// ~11 × 11 km around (48.0, 2.0); the tests' fleets keep other files' vehicles out.
const BOX = { minLat: 47.95, minLon: 1.95, maxLat: 48.05, maxLon: 2.05 };

/** One area watch applied to `state` as the page applies it; stop() ends it. */
function follow(state: MapState, token: string) {
  state.restart();
  const live = createLiveClient({ baseUrl: t.tracker.url, token });
  const watch = live.watchArea({ box: BOX }, { onEvent: (e) => state.applyEvent(e) });
  return {
    async stop() {
      watch.close();
      await watch.done;
    },
  };
}

const until = (what: string, check: () => boolean) => waitFor(what, () => (check() ? true : undefined));

describe("web map state", () => {
  test("map - the snapshot fills the map, moves grow trails, EXIT removes, OFFLINE greys", async () => {
    const fleet = uniqueName("map");
    const token = await t.token({ fleets: [fleet] });
    const [a, b, c] = [uniqueName("a"), uniqueName("b"), uniqueName("c")];
    await t.publish([point(a, 1, { fleetId: fleet, lat: 48.0, lon: 2.0 }), point(b, 1, { fleetId: fleet, lat: 48.01, lon: 2.01 })]);
    const dispatcher = await t.token({ fleets: [fleet], dispatch: true });
    await waitFor("b in redis", () =>
      client.getVehicle({ vehicleId: b }, { headers: { authorization: `Bearer ${dispatcher}` } }).then(
        () => true,
        () => undefined,
      ),
    );
    const state = createMapState({ trailLength: 3 });
    const w = follow(state, token);
    await until("snapshot end", () => state.live);
    expect([...state.vehicles.keys()].sort()).toEqual([a, b].sort());
    expect(state.vehicles.get(a)).toMatchObject({ lat: 48.0, lon: 2.0, fleetId: fleet, online: true });

    // a moves three times (its trail keeps the newest 3), c enters, b drives out of the box. Each
    // move waits for the one before: the tracker may rightly fold points that arrive together into one.
    await t.publish([point(a, 2, { fleetId: fleet, lat: 48.001, lon: 2.0 }), point(c, 1, { fleetId: fleet, lat: 47.99, lon: 1.99 })]);
    await until("a at seq 2", () => state.vehicles.get(a)?.lat === 48.001);
    await t.publish([point(a, 3, { fleetId: fleet, lat: 48.002, lon: 2.0 })]);
    await until("a at seq 3", () => state.vehicles.get(a)?.lat === 48.002);
    await t.publish([point(a, 4, { fleetId: fleet, lat: 48.003, lon: 2.0 }), point(b, 2, { fleetId: fleet, lat: 49.0, lon: 2.01 })]);
    await until("a at seq 4, b gone, c in", () => state.vehicles.get(a)?.lat === 48.003 && !state.vehicles.has(b) && state.vehicles.has(c));
    expect(state.vehicles.get(a)!.trail).toEqual([
      { lat: 48.001, lon: 2.0 },
      { lat: 48.002, lon: 2.0 },
      { lat: 48.003, lon: 2.0 },
    ]);
    expect(state.vehicles.get(c)!.trail).toEqual([{ lat: 47.99, lon: 1.99 }]);
    expect(state.updatesPerSecond()).toBeGreaterThan(0);
    expect(Date.now() - state.lastEventAtMs!).toBeLessThan(5000);

    // c stops reporting: the sweep sends OFFLINE, and the page keeps it grey until offlineKeepMs.
    await t.publish([point(c, 2, { fleetId: fleet, lat: 47.99, lon: 1.99, receivedAt: timestampFromMs(Date.now() - 3_600_000) })]);
    await until("c at seq 2", () => state.vehicles.get(c)?.seq === 2);
    await t.tracker.sweep();
    await until("c offline", () => state.vehicles.get(c)?.online === false);
    expect(state.onlineCount()).toBe(1);
    state.prune(Date.now() + 30_000);
    expect(state.vehicles.has(c)).toBe(true);
    state.prune(Date.now() + 61_000);
    expect([...state.vehicles.keys()]).toEqual([a]);
    await w.stop();
  });

  test("map - after a reconnect the new snapshot drops what left meanwhile and keeps the trails of the rest", async () => {
    const fleet = uniqueName("remap");
    const token = await t.token({ fleets: [fleet] });
    const [stays, leaves] = [uniqueName("stays"), uniqueName("leaves")];
    const state = createMapState();
    let w = follow(state, token);
    await until("snapshot end", () => state.live);
    await t.publish([
      point(stays, 1, { fleetId: fleet, lat: 48.0, lon: 2.0 }),
      point(leaves, 1, { fleetId: fleet, lat: 48.02, lon: 2.02 }),
    ]);
    await until("stays entered", () => state.vehicles.has(stays));
    await t.publish([point(stays, 2, { fleetId: fleet, lat: 48.001, lon: 2.0 })]);
    await until("both in, stays moved", () => state.vehicles.has(leaves) && state.vehicles.get(stays)?.lat === 48.001);
    await w.stop();

    // While the page is away, `leaves` drives out: no EXIT reaches the page.
    await t.publish([point(leaves, 2, { fleetId: fleet, lat: 49.0, lon: 2.02 })]);
    await Bun.sleep(200);
    expect(state.vehicles.has(leaves)).toBe(true);
    w = follow(state, token);
    expect(state.live).toBe(false);
    await until("second snapshot end", () => state.live);
    expect([...state.vehicles.keys()]).toEqual([stays]);
    expect(state.vehicles.get(stays)!.trail).toEqual([
      { lat: 48.0, lon: 2.0 },
      { lat: 48.001, lon: 2.0 },
    ]);
    await w.stop();
  });
  test("map - a large snapshot applied by a slow page lets the page's other work (input, timers) run every few ms", async () => {
    // 1,500 vehicles in a box of ~300 m (inside the snapshot's first search circle), applied at
    // ~0.4 ms an event as a page on a slow machine applies them (~600 ms in all). Handed on in one
    // go, a timer (the page's input) waited for whole reads of the stream: ~1,000 events, 400 ms.
    const fleet = uniqueName("big");
    const token = await t.token({ fleets: [fleet] });
    const box = { minLat: 48.5, minLon: 2.5, maxLat: 48.503, maxLon: 2.504 };
    const ids = Array.from({ length: 1500 }, (_, i) => `${fleet}-${i}`);
    await t.publish(ids.map((id, i) => point(id, 1, { fleetId: fleet, lat: 48.5005 + (i % 40) * 0.00005, lon: 2.5005 + i * 0.000002 })));
    const dispatcher = await t.token({ fleets: [fleet], dispatch: true });
    await waitFor("the last vehicle in redis", () =>
      client.getVehicle({ vehicleId: ids.at(-1)! }, { headers: { authorization: `Bearer ${dispatcher}` } }).then(
        () => true,
        () => undefined,
      ),
    );
    const state = createMapState();
    // Gaps between a 2 ms timer's runs from the first snapshot event to the snapshot's end (the
    // tracker, in this process, builds its snapshot before: not counted).
    let last = 0;
    let longestGap = 0;
    const ticker = setInterval(() => {
      if (last === 0 || state.live) return;
      const now = performance.now();
      longestGap = Math.max(longestGap, now - last);
      last = now;
    }, 2);
    const live = createLiveClient({ baseUrl: t.tracker.url, token });
    const watch = live.watchArea(
      { box },
      {
        onEvent: (e) => {
          if (e.kind === "snapshot" && last === 0) last = performance.now();
          if (e.kind === "snapshotEnd") longestGap = Math.max(longestGap, performance.now() - last);
          state.applyEvent(e);
          const until = performance.now() + 0.4;
          while (performance.now() < until);
        },
      },
    );
    try {
      await waitFor("snapshot end", () => (state.live ? true : undefined), 20_000);
      expect(state.vehicles.size).toBe(1500);
      expect(longestGap).toBeLessThan(150);
    } finally {
      clearInterval(ticker);
      watch.close();
      await watch.done;
    }
  }, 30_000);
});
