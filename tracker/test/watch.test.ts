/**
 * WatchVehicles and WatchArea through grpc-js: snapshot then live with no gap and no duplicate,
 * ENTER / MOVE / EXIT / OFFLINE, order watches that follow a reassignment, min_interval_ms,
 * coalescing and the end of a watcher that stays behind, and the bad input of the issue.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { AreaSchema } from "../../gen/fleet/v1/geo_pb";
import { VehicleStatus } from "../../gen/fleet/v1/position_pb";
import { EventKind, WatchAreaRequestSchema, type VehicleEvent } from "../../gen/fleet/v1/tracker_pb";
import { createTracker } from "../tracker";
import { bearer, grpc, grpcClient, point, startTestTracker, uniqueName, unary, waitFor, watch, type TestTracker } from "./helpers";

let t: TestTracker;
let client: grpc.Client;
beforeAll(async () => {
  t = await startTestTracker();
  client = grpcClient(t.target);
});
afterAll(async () => {
  client.close();
  await t.close();
});

const kinds = (events: VehicleEvent[]) =>
  events.map((e) => `${EventKind[e.kind]}${e.vehicle?.position ? ` ${e.vehicle.position.vehicleId}@${e.vehicle.position.seq}` : ""}`);
const box = (minLat: number, minLon: number, maxLat: number, maxLon: number) => ({
  shape: { case: "box", value: { minLat, minLon, maxLat, maxLon } },
});

describe("watch vehicles", () => {
  test("watch - snapshot, SNAPSHOT_END, then every later point exactly once while points keep coming", async () => {
    const fleet = uniqueName("wv");
    const v = uniqueName("car");
    const token = await t.token({ fleets: [fleet] });
    await t.publish([point(v, 1, { fleetId: fleet })]);
    await waitForSeq(token, v, 1);
    // Points keep arriving while the watch takes its snapshot.
    let seq = 1;
    const sending = (async () => {
      while (seq < 60) {
        await t.publish([point(v, ++seq, { fleetId: fleet, lat: 52.52 + seq * 1e-4 })]);
        await Bun.sleep(2);
      }
    })();
    await Bun.sleep(20);
    const w = watch(client, "watchVehicles", token, { vehicleIds: [v] });
    await sending;
    await waitUntil(() => w.events.some((e) => e.vehicle?.position?.seq === 60));
    w.cancel();
    const [snap, end, ...live] = w.events;
    expect(snap!.kind).toBe(EventKind.SNAPSHOT);
    expect(end!.kind).toBe(EventKind.SNAPSHOT_END);
    expect(live.length).toBeGreaterThan(0);
    // No gap, no duplicate: each event's seq is the previous one plus one plus what it coalesced.
    let prev = snap!.vehicle!.position!.seq;
    for (const e of live) {
      expect(e.kind).toBe(EventKind.MOVE);
      expect(e.vehicle!.position!.seq).toBe(prev + 1 + e.coalesced);
      prev = e.vehicle!.position!.seq;
    }
    expect(prev).toBe(60);
  });

  test("watch - an unknown vehicle gives an empty snapshot, then goes live when it first reports", async () => {
    const v = uniqueName("new");
    const w = watch(client, "watchVehicles", await t.token({ vehicles: [v] }), { vehicleIds: [v] });
    await w.until(1);
    expect(kinds(w.events)).toEqual(["SNAPSHOT_END"]);
    await t.publish([point(v, 1)]);
    await w.until(2);
    expect(kinds(w.events)).toEqual(["SNAPSHOT_END", `ENTER ${v}@1`]);
    await t.publish([point(v, 2)]);
    await w.until(3);
    expect(w.events[2]!.kind).toBe(EventKind.MOVE);
    w.cancel();
  });

  test("watch - the vehicle going stale is OFFLINE for its watchers, and back with its next point", async () => {
    const v = uniqueName("stale");
    await t.publish([point(v, 1, { receivedAt: timestampFromMs(Date.now() - 3_600_000) })]);
    const token = await t.token({ vehicles: [v] });
    await waitForSeq(token, v, 1);
    const w = watch(client, "watchVehicles", token, { vehicleIds: [v] });
    await w.until(2);
    await t.tracker.sweep();
    await w.until(3);
    expect(w.events[2]!.kind).toBe(EventKind.OFFLINE);
    expect(w.events[2]!.vehicle!.online).toBe(false);
    await t.publish([point(v, 2)]);
    await w.until(4);
    expect(w.events[3]!.kind).toBe(EventKind.MOVE);
    expect(w.events[3]!.vehicle!.online).toBe(true);
    w.cancel();
  });

  test("watch - min_interval_ms: a burst of points gives the first and then the latest, the rest counted as coalesced", async () => {
    const v = uniqueName("burst");
    const token = await t.token({ vehicles: [v] });
    await t.publish([point(v, 1)]);
    await waitForSeq(token, v, 1);
    const w = watch(client, "watchVehicles", token, { vehicleIds: [v], minIntervalMs: 400 });
    await w.until(2);
    for (let s = 2; s <= 21; s++) await t.publish([point(v, s)]);
    await waitUntil(() => w.events.some((e) => e.vehicle?.position?.seq === 21));
    w.cancel();
    const live = w.events.slice(2);
    expect(live.length).toBeLessThan(20);
    expect(live.reduce((n, e) => n + 1 + e.coalesced, 0)).toBe(20);
  });

  test("watch - a min_interval_ms past 2^31 ms is clamped: the watch holds updates back without a timer that overflows", async () => {
    const v = uniqueName("long");
    const token = await t.token({ vehicles: [v] });
    await t.publish([point(v, 1)]);
    await waitForSeq(token, v, 1);
    const overflows: string[] = [];
    const onWarning = (w: Error) => {
      if (w.name === "TimeoutOverflowWarning") overflows.push(w.message);
    };
    process.on("warning", onWarning);
    try {
      const w = watch(client, "watchVehicles", token, { vehicleIds: [v], minIntervalMs: 4_000_000_000 });
      await w.until(2);
      await t.publish([point(v, 2)]);
      await w.until(3); // the first live update goes at once
      await t.publish([point(v, 3)]);
      await waitForSeq(token, v, 3);
      await Bun.sleep(100);
      expect(kinds(w.events)).toEqual([`SNAPSHOT ${v}@1`, "SNAPSHOT_END", `MOVE ${v}@2`]);
      expect(overflows).toEqual([]);
      w.cancel();
    } finally {
      process.off("warning", onWarning);
    }
  });

  test("watch - an order watch shows the vehicle serving it and follows a reassignment", async () => {
    const order = uniqueName("order");
    const a = uniqueName("a");
    const b = uniqueName("b");
    const dispatcher = await t.token({ all: true, dispatch: true });
    await t.publish([point(a, 1), point(b, 1)]);
    await waitForSeq(dispatcher, b, 1);
    expect(
      (await unary(client, "setStatus", dispatcher, { vehicleId: a, status: VehicleStatus.ON_DELIVERY, orderId: order })).error,
    ).toBeUndefined();
    // The points' fleet is "fleet-a" (helpers' point): the order is one of that fleet.
    const customer = await t.token({ orders: [`fleet-a/${order}`] });
    const w = watch(client, "watchVehicles", customer, { orderId: `fleet-a/${order}` });
    await w.until(2);
    expect(kinds(w.events)).toEqual([`SNAPSHOT ${a}@1`, "SNAPSHOT_END"]);
    await t.publish([point(a, 2), point(b, 2)]);
    await w.until(3);
    expect(kinds(w.events.slice(2))).toEqual([`MOVE ${a}@2`]);
    await unary(client, "setStatus", dispatcher, { vehicleId: a, status: VehicleStatus.AVAILABLE, orderId: "" });
    await unary(client, "setStatus", dispatcher, { vehicleId: b, status: VehicleStatus.ON_DELIVERY, orderId: order });
    await w.until(5);
    // a no longer serves the order, so the customer no longer sees it: its EXIT says nothing but its id.
    expect(kinds(w.events.slice(3))).toEqual([`EXIT ${a}@0`, `ENTER ${b}@2`]);
    expect(w.events[3]!.vehicle!.position!.lat).toBe(0);
    expect(w.events[3]!.vehicle!.orderId).toBe("");
    await t.publish([point(a, 3), point(b, 3)]);
    await w.until(6);
    expect(kinds(w.events.slice(5))).toEqual([`MOVE ${b}@3`]);
    w.cancel();
  });

  test("watch - an order watch is of one fleet's order: a fleet-B vehicle sending the same order id never shows", async () => {
    const [fleetA, fleetB] = [uniqueName("oa"), uniqueName("ob")];
    const [a, b] = [uniqueName("a"), uniqueName("b")];
    const customer = await t.token({ orders: [`${fleetA}/ORD-1`] });
    await t.publish([point(b, 1, { fleetId: fleetB, orderId: "ORD-1" })]);
    await waitForSeq(await t.token({ fleets: [fleetB] }), b, 1);
    const w = watch(client, "watchVehicles", customer, { orderId: `${fleetA}/ORD-1` });
    await w.until(1);
    expect(kinds(w.events)).toEqual(["SNAPSHOT_END"]);
    // In stream order: b's point would reach the watch before a's.
    await t.publish([point(b, 2, { fleetId: fleetB, orderId: "ORD-1" })]);
    await t.publish([point(a, 1, { fleetId: fleetA, orderId: "ORD-1" })]);
    await w.until(2);
    await t.publish([point(b, 3, { fleetId: fleetB, orderId: "ORD-1" })]);
    await t.publish([point(a, 2, { fleetId: fleetA, orderId: "ORD-1" })]);
    await w.until(3);
    expect(kinds(w.events)).toEqual(["SNAPSHOT_END", `ENTER ${a}@1`, `MOVE ${a}@2`]);
    w.cancel();
    // Fleet B's order watch is refused to A's customer.
    const other = (await watch(client, "watchVehicles", customer, { orderId: `${fleetB}/ORD-1` }).ended)!;
    expect(other.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(other.details).toContain(`does not grant order "${fleetB}/ORD-1"`);
  });

  test("watch - an EXIT of a vehicle the token no longer sees (it moved to another fleet) carries nothing but its id", async () => {
    const fleet = uniqueName("ex");
    const v = uniqueName("ex");
    const token = await t.token({ fleets: [fleet] });
    await t.publish([point(v, 1, { fleetId: fleet, orderId: "ORD-7", lat: 45.1, lon: 7.6 })]);
    await waitForSeq(token, v, 1);
    const byId = watch(client, "watchVehicles", token, { vehicleIds: [v] });
    const area = watch(client, "watchArea", token, { area: box(45, 7.5, 45.2, 7.7) });
    await byId.until(2);
    await area.until(2);
    await t.publish([point(v, 2, { fleetId: uniqueName("elsewhere"), orderId: "ORD-8", lat: 45.11, lon: 7.61, speed: 3 })]);
    for (const w of [byId, area]) {
      await w.until(3);
      const exit = w.events[2]!;
      expect(exit.kind).toBe(EventKind.EXIT);
      expect(exit.vehicle!.position!.vehicleId).toBe(v);
      // Nothing of its new state: no position, seq, time, order, fleet, status.
      expect(exit.vehicle!.position).toMatchObject({ seq: 0, lat: 0, lon: 0, speed: 0, heading: 0, orderId: "", fleetId: "", status: 0 });
      expect(exit.vehicle!.position!.recordedAt).toBeUndefined();
      expect(exit.vehicle!).toMatchObject({ orderId: "", status: 0, online: false });
      expect(exit.vehicle!.lastSeen).toBeUndefined();
      w.cancel();
    }
  });

  test("watch - bad input: too many ids, ids and order, an empty id, a control character, no token, a forged token, a vehicle the token does not grant", async () => {
    const first = async (token: string | undefined, req: object) => (await watch(client, "watchVehicles", token, req).ended)!;
    const ok = await t.token({ vehicles: ["x"] });
    const tooMany = await first(ok, { vehicleIds: Array.from({ length: 101 }, (_, i) => `v${i}`) });
    expect(tooMany.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(tooMany.details).toContain("at most 100");
    expect((await first(ok, { vehicleIds: ["x"], orderId: "o" })).details).toContain("not both");
    expect((await first(ok, {})).details).toContain("name vehicle_ids or an order_id");
    expect((await first(ok, { vehicleIds: [""] })).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((await first(ok, { orderId: "o\n1" })).details).toContain("order_id has a control character (U+000A)");
    const none = await first(undefined, { vehicleIds: ["x"] });
    expect(none.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(none.details).toContain("missing token");
    const forged = ok.slice(0, -4) + (ok.endsWith("AAAA") ? "BBBB" : "AAAA");
    expect((await first(forged, { vehicleIds: ["x"] })).code).toBe(grpc.status.UNAUTHENTICATED);
    const denied = await first(ok, { vehicleIds: ["x", "y"] });
    expect(denied.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(denied.details).toContain('does not grant vehicle "y"');
    expect((await first(ok, { orderId: `fleet-a/${uniqueName("o")}` })).code).toBe(grpc.status.PERMISSION_DENIED);
    const bare = await first(ok, { orderId: "ORD-1" });
    expect(bare.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(bare.details).toContain("names no fleet: write it fleet/order");
  });
});

describe("watch area", () => {
  test("area - snapshot, then ENTER, MOVE, EXIT across cells, status filter and OFFLINE; other fleets never show", async () => {
    const fleet = uniqueName("area");
    const token = await t.token({ fleets: [fleet] });
    const dispatcher = await t.token({ fleets: [fleet], dispatch: true });
    const [inside, outside, stranger] = [uniqueName("in"), uniqueName("out"), uniqueName("stranger")];
    // A box of ~11 × 11 km around (40.0, -3.7): several geohash-5 cells.
    const area = box(39.95, -3.75, 40.05, -3.65);
    await t.publish([
      point(inside, 1, { fleetId: fleet, lat: 40.0, lon: -3.7 }),
      point(outside, 1, { fleetId: fleet, lat: 40.2, lon: -3.7 }),
      point(stranger, 1, { fleetId: uniqueName("other"), lat: 40.0, lon: -3.7 }),
    ]);
    await waitForSeq(dispatcher, outside, 1);
    const w = watch(client, "watchArea", token, { area });
    await w.until(2);
    expect(kinds(w.events)).toEqual([`SNAPSHOT ${inside}@1`, "SNAPSHOT_END"]);
    // outside drives in (another cell), inside moves within, the stranger moves around in the area.
    await t.publish([
      point(outside, 2, { fleetId: fleet, lat: 39.96, lon: -3.66 }),
      point(inside, 2, { fleetId: fleet, lat: 40.01, lon: -3.7 }),
      point(stranger, 2, { fleetId: "other", lat: 40.01, lon: -3.7 }),
    ]);
    await w.until(4);
    expect(kinds(w.events.slice(2)).sort()).toEqual([`ENTER ${outside}@2`, `MOVE ${inside}@2`].sort());
    // inside leaves the area, far enough to change cell: its old cell's watchers hear it.
    await t.publish([point(inside, 3, { fleetId: fleet, lat: 41.0, lon: -3.7 })]);
    await w.until(5);
    expect(kinds(w.events.slice(4))).toEqual([`EXIT ${inside}@3`]);
    // A status filter: an AVAILABLE-only watch sees outside leave when it goes on delivery.
    const avail = watch(client, "watchArea", token, { area, statuses: [VehicleStatus.AVAILABLE, VehicleStatus.ACTIVE] });
    await avail.until(2);
    expect(kinds(avail.events)).toEqual([`SNAPSHOT ${outside}@2`, "SNAPSHOT_END"]);
    await unary(client, "setStatus", dispatcher, { vehicleId: outside, status: VehicleStatus.ON_DELIVERY, orderId: "o-9" });
    await avail.until(3);
    expect(kinds(avail.events.slice(2))).toEqual([`EXIT ${outside}@2`]);
    await w.until(6);
    expect(w.events[5]!.kind).toBe(EventKind.MOVE);
    expect(w.events[5]!.vehicle!.status).toBe(VehicleStatus.ON_DELIVERY);
    // Staleness: outside stops reporting (its last point was heard long ago).
    await t.publish([point(outside, 3, { fleetId: fleet, lat: 39.96, lon: -3.66, receivedAt: timestampFromMs(Date.now() - 3_600_000) })]);
    await w.until(7);
    await t.tracker.sweep();
    await w.until(8);
    expect(kinds(w.events.slice(7))).toEqual([`OFFLINE ${outside}@3`]);
    w.cancel();
    avail.cancel();
    expect(w.events.some((e) => e.vehicle?.position?.vehicleId === stranger)).toBe(false);
  });

  test("area - bad input: inverted or out-of-range corners, radius ≤ 0 or absurd, no area", async () => {
    const token = await t.token({ all: true });
    const cases: [object, string][] = [
      [{ area: box(40.05, -3.75, 39.95, -3.65) }, "inverted"],
      [{ area: box(39.95, -3.75, 95, -3.65) }, "lat -90..90"],
      [{ area: { shape: { case: "circle", value: { lat: 40, lon: -3.7, radiusM: 0 } } } }, "must be above 0"],
      [{ area: { shape: { case: "circle", value: { lat: 40, lon: -3.7, radiusM: 5e7 } } } }, "at most"],
      [{}, "area is missing"],
    ];
    for (const [req, reason] of cases) {
      const err = (await watch(client, "watchArea", token, req).ended)!;
      expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(err.details).toContain(reason);
    }
  });
});

describe("slow watchers", () => {
  let slow: TestTracker;
  let slowClient: grpc.Client;
  beforeAll(async () => {
    slow = await startTestTracker({ TRACKER_WATCH_MAX_PENDING: "50", TRACKER_WATCH_MAX_LAG: "1s" });
    slowClient = grpcClient(slow.target);
  });
  afterAll(async () => {
    slowClient.close();
    await slow.close();
  });

  const metrics = async () => (await (await fetch(`${slow.tracker.adminUrl}/metrics`)).text()).split("\n");
  const counter = async (name: string, label: string) => {
    const line = (await metrics()).find((l) => l.startsWith(name) && l.includes(label));
    return line ? Number(line.split(" ").pop()) : 0;
  };

  for (const [vehicles, reason] of [
    [30, "took nothing for"], // fewer vehicles than the pending bound: coalesced until the lag bound ends it
    [80, "reads too slowly"], // more: the pending bound ends it
  ] as const) {
    test(`slow - a watcher that stops reading is coalesced, then ended with RESOURCE_EXHAUSTED ("${reason}")`, async () => {
      const fleet = uniqueName("slow");
      const ids = Array.from({ length: vehicles }, (_, i) => `${fleet}-${i}`);
      const token = await slow.token({ fleets: [fleet] });
      const before = await counter("tracker_watch_events_coalesced_total", 'kind="area"');
      const failedBefore = await counter("tracker_watches_too_slow_total", 'kind="area"');
      const request = toBinary(
        WatchAreaRequestSchema,
        create(WatchAreaRequestSchema, { area: create(AreaSchema, box(10, 10, 10.1, 10.1) as never) }),
      );
      const child = spawn(
        "node",
        [
          join(import.meta.dir, "slow-client.mjs"),
          slow.target,
          token,
          "/fleet.v1.TrackerService/WatchArea",
          Buffer.from(request).toString("base64"),
        ],
        {
          stdio: ["pipe", "pipe", "inherit"],
        },
      );
      let out = "";
      child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
      try {
        await waitUntil(() => out.includes("paused"));
        // Updates keep coming (enough to fill the HTTP/2 window and the socket, so the server cannot
        // write) until the server ends the watch; the client still does not read.
        let round = 0;
        await waitUntil(async () => {
          for (let i = 0; i < 5; i++, round++) {
            await slow.publish(
              ids.map((id, i) => point(id, round + 1, { fleetId: fleet, lat: 10.01 + i * 1e-3, lon: 10.01 + round * 1e-4 })),
            );
          }
          return (await counter("tracker_watches_too_slow_total", 'kind="area"')) > failedBefore;
        }, 10_000);
        child.stdin!.write("resume\n");
        await waitUntil(() => out.includes("code"), 10_000);
        const status = JSON.parse(out.split("\n").find((l) => l.includes("code"))!);
        expect(status.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
        expect(status.details).toContain(reason);
        if (vehicles < 50) expect(await counter("tracker_watch_events_coalesced_total", 'kind="area"')).toBeGreaterThan(before);
      } finally {
        child.kill();
      }
    }, 30_000);
  }
});

describe("live fan-out", () => {
  test("fan-out - the consuming tracker hands its own events to its watches; a tracker that only serves gets them over NATS; each once", async () => {
    const serving = await createTracker({
      config: t.config,
      stream: t.stream,
      subjects: `${t.stream}.pos.>`,
      prefix: t.prefix,
      consume: false,
    });
    const other = grpcClient(serving.url.replace(/^https?:\/\//, ""));
    try {
      const fleet = uniqueName("fo");
      const v = uniqueName("fan");
      const token = await t.token({ fleets: [fleet] });
      await t.publish([point(v, 1, { fleetId: fleet })]);
      await waitForSeq(token, v, 1);
      const here = watch(client, "watchVehicles", token, { vehicleIds: [v] });
      const there = watch(other, "watchVehicles", token, { vehicleIds: [v] });
      await waitUntil(() => [here, there].every((w) => w.events.some((e) => e.kind === EventKind.SNAPSHOT_END)));
      // Wait for the serving tracker's NATS subscription to be in place before the points go.
      await Bun.sleep(100);
      for (let seq = 2; seq <= 6; seq++) await t.publish([point(v, seq, { fleetId: fleet, lat: 52.52 + seq * 1e-4 })]);
      for (const w of [here, there]) await waitUntil(() => w.events.some((e) => e.vehicle?.position?.seq === 6));
      await Bun.sleep(100);
      here.cancel();
      there.cancel();
      // A watch its client closed ends as cancelled, not as done.
      await waitUntil(async () =>
        /rpc_calls_total\{[^}]*procedure="WatchVehicles"[^}]*code="canceled"[^}]*\} [1-9]/.test(
          await (await fetch(`${serving.adminUrl}/metrics`)).text(),
        ),
      );
      for (const w of [here, there]) {
        const live = w.events.filter((e) => e.kind === EventKind.MOVE);
        // Every seq once (or coalesced into a later one), in order.
        let prev = 1;
        for (const e of live) {
          expect(e.vehicle!.position!.seq).toBe(prev + 1 + e.coalesced);
          prev = e.vehicle!.position!.seq;
        }
        expect(prev).toBe(6);
      }
    } finally {
      other.close();
      await serving.close();
    }
  });
});

async function waitForSeq(token: string, id: string, seq: number) {
  await waitUntil(async () => {
    const r = await unary<{ vehicle?: { position?: { seq: number } } }>(client, "getVehicle", token, { vehicleId: id });
    return r.response?.vehicle?.position?.seq === seq;
  });
}

async function waitUntil(check: () => boolean | Promise<boolean>, timeoutMs = 5000) {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error("timed out");
    await Bun.sleep(20);
  }
}

describe("heartbeat", () => {
  test("watch - a watch with nothing to send gets a message with no events every TRACKER_WATCH_HEARTBEAT, and live events in between", async () => {
    const quiet = await startTestTracker({ TRACKER_WATCH_HEARTBEAT: "1s" });
    const c = grpcClient(quiet.target);
    try {
      const v = uniqueName("still");
      await quiet.publish([point(v, 1)]);
      const token = await quiet.token({ vehicles: [v] });
      const messages: number[] = [];
      const call = (
        c as unknown as Record<string, (m: unknown, md: grpc.Metadata) => grpc.ClientReadableStream<{ events: VehicleEvent[] }>>
      ).watchVehicles!.bind(c)({ vehicleIds: [v] }, bearer(token));
      call.on("data", (m: { events: VehicleEvent[] }) => messages.push(m.events.length));
      call.on("error", () => {});
      // Snapshot (one message: SNAPSHOT and SNAPSHOT_END), then a still vehicle: empty messages only.
      await Bun.sleep(2_600);
      const empties = messages.filter((n) => n === 0).length;
      expect(messages[0]).toBe(2);
      expect(empties).toBeGreaterThanOrEqual(1);
      expect(empties).toBeLessThanOrEqual(3);
      // A point still comes as an event at once.
      await quiet.publish([point(v, 2)]);
      await waitFor("the MOVE", () => messages.slice(1).some((n) => n > 0) || undefined);
      call.cancel();
    } finally {
      c.close();
      await quiet.close();
    }
  });

  test("watch - a quiet watch's messages are at most TRACKER_WATCH_HEARTBEAT apart (the once-a-second check does not add a second), and sub-second values hold", async () => {
    for (const [setting, intervalMs] of [
      ["1s", 1000],
      ["500ms", 500],
    ] as const) {
      const quiet = await startTestTracker({ TRACKER_WATCH_HEARTBEAT: setting });
      const c = grpcClient(quiet.target);
      try {
        const v = uniqueName("still");
        await quiet.publish([point(v, 1)]);
        const token = await quiet.token({ vehicles: [v] });
        const arrivals: number[] = [];
        const call = (
          c as unknown as Record<string, (m: unknown, md: grpc.Metadata) => grpc.ClientReadableStream<{ events: VehicleEvent[] }>>
        ).watchVehicles!.bind(c)({ vehicleIds: [v] }, bearer(token));
        call.on("data", () => arrivals.push(performance.now()));
        call.on("error", () => {});
        await Bun.sleep(4_500);
        call.cancel();
        const gaps = arrivals.slice(1).map((t, i) => t - arrivals[i]!);
        // The snapshot, then heartbeats only. Sent at the first once-a-second check past the
        // interval, a heartbeat came up to a second late (1618 ms after the snapshot at 1 s), and a
        // 500 ms one every second.
        expect(gaps.length).toBeGreaterThanOrEqual(Math.floor(4_000 / intervalMs) - 1);
        expect({ setting, longest: Math.max(...gaps) < intervalMs + 300 }).toEqual({ setting, longest: true });
      } finally {
        c.close();
        await quiet.close();
      }
    }
  }, 30_000);
});
