import { afterAll, beforeAll, expect, test } from "bun:test";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { type HistoryService, StatsBucket } from "../../gen/fleet/v1/history_pb";
import type { History } from "../history";
import { bearer, countRows, eventually, historyFixture, pointAt, type HistoryFixture } from "./helpers";

let fx: HistoryFixture;
let history: History;
let client: Client<typeof HistoryService>;
let all: ReturnType<typeof bearer>;

const T0 = Date.UTC(2026, 10, 19, 14, 0, 0);
const ts = timestampFromMs;

beforeAll(async () => {
  fx = await historyFixture({ HISTORY_TRACK_MAX_RANGE: "2d", HISTORY_REPLAY_MAX_RANGE: "1d" });
  history = await fx.start();
  client = fx.client(history);
  all = bearer(await fx.token({ all: true }));
  // q1: an hour east, a stop of 5 minutes, an hour north (one point a second).
  const pts = [];
  for (let i = 0; i < 7500; i++) {
    const east = Math.min(i, 3600);
    const north = Math.max(0, i - 3900);
    const stopped = i > 3600 && i <= 3900;
    pts.push(
      pointAt("q1", T0 + i * 1000, i + 1, {
        lat: 52.5 + north * 1e-4,
        lon: 13.4 + east * 1e-4,
        speed: stopped ? 0 : 11,
        heading: i <= 3600 ? 90 : 0,
      }),
    );
  }
  for (let i = 0; i < pts.length; i += 1000) await fx.publish(pts.slice(i, i + 1000));
  await fx.publish([pointAt("q2", T0, 1, { fleetId: "fleet-b", orderId: "o-9", lat: 52.5, lon: 13.4 })]);
  // q3: a day at one point a minute, published newest first, so that PostgreSQL stores it out of time order;
  // a day is read in four slices at once, and points fall exactly on the slices' bounds (every 6 h).
  const day = Array.from({ length: 1440 }, (_, i) =>
    pointAt("q3", T0 + i * 60_000, i + 1, { orderId: `o-${i % 3}`, speed: 10 + (i % 5), heading: (i * 7) % 360 }),
  );
  for (let i = day.length; i > 0; i -= 200) await fx.publish(day.slice(Math.max(0, i - 200), i));
  // q4: two hours at one point every 10 s; it serves order ORD-7 from 01:15 to 01:45 only, slowly.
  const served = (i: number) => i >= 450 && i < 630;
  const q4 = Array.from({ length: 720 }, (_, i) =>
    pointAt("q4", T0 + i * 10_000, i + 1, { orderId: served(i) ? "ORD-7" : "", speed: served(i) ? 5 : 20 }),
  );
  await fx.publish(q4);
  await eventually(async () => (await countRows(fx.sql, "q%")) === 7501 + 1440 + 720, "all q rows");
}, 60_000);
afterAll(async () => {
  await fx?.close();
}, 30_000);

const code = async (p: Promise<unknown>) => {
  const err = await p.then(
    () => undefined,
    (e) => ConnectError.from(e),
  );
  return err ? { code: err.code, message: err.rawMessage } : undefined;
};

test("track - simplified to the budget, keeping the turn and the stop", async () => {
  const r = await client.getTrack({ vehicleId: "q1", from: ts(T0), to: ts(T0 + 3 * 3600_000), maxPoints: 100 }, all);
  expect(r.totalPoints).toBe(7500n);
  expect(r.points.length).toBeLessThanOrEqual(100);
  expect(r.points.length).toBeGreaterThan(3);
  const times = r.points.map((p) => Number(p.recordedAt!.seconds) * 1000 - T0);
  expect(times[0]).toBe(0);
  expect(times.at(-1)).toBe(7499_000);
  expect(times).toContain(3601_000); // stops
  expect(times).toContain(3901_000); // drives on (the turn)
  expect(times).toEqual([...times].sort((a, b) => a - b));
});

test("track - a day read in time slices has every point once, in time order, with all its fields", async () => {
  const r = await client.getTrack({ vehicleId: "q3", from: ts(T0), to: ts(T0 + 86_400_000), maxPoints: 2000 }, all);
  expect(r.totalPoints).toBe(1440n);
  expect(r.points.map((p) => p.seq)).toEqual(Array.from({ length: 1440 }, (_, i) => i + 1));
  expect(r.points.map((p) => Number(p.recordedAt!.seconds) * 1000 - T0)).toEqual(Array.from({ length: 1440 }, (_, i) => i * 60_000));
  const p = r.points[721]!;
  expect([p.orderId, p.fleetId, p.speed, p.heading, p.lat]).toEqual(["o-1", "fleet-a", 11, (721 * 7) % 360, 52.52 + 722 * 1e-4]);
  // The same day simplified: first and last kept, within the budget.
  const s = await client.getTrack({ vehicleId: "q3", from: ts(T0), to: ts(T0 + 86_400_000), maxPoints: 50 }, all);
  expect(s.totalPoints).toBe(1440n);
  expect(s.points.length).toBeLessThanOrEqual(50);
  expect([s.points[0]!.seq, s.points.at(-1)!.seq]).toEqual([1, 1440]);
});

test("track - from after to, and a range over the limit, are INVALID_ARGUMENT with the reason", async () => {
  const a = await code(client.getTrack({ vehicleId: "q1", from: ts(T0 + 1000), to: ts(T0) }, all));
  expect(a?.code).toBe(Code.InvalidArgument);
  expect(a?.message).toContain("must be before");
  const b = await code(client.getTrack({ vehicleId: "q1", from: ts(T0), to: ts(T0 + 3 * 86_400_000) }, all));
  expect(b?.code).toBe(Code.InvalidArgument);
  expect(b?.message).toContain("longer than the limit of 2d");
  const c = await code(client.getTrack({ vehicleId: "", from: ts(T0), to: ts(T0 + 1000) }, all));
  expect(c?.code).toBe(Code.InvalidArgument);
});

test("track, stats, replay - an id with a control character, or a time out of range, is INVALID_ARGUMENT saying which", async () => {
  const replay = (req: Parameters<typeof client.replay>[0]) =>
    (async () => {
      for await (const _ of client.replay(req, all));
    })();
  for (const vehicleId of ["q1\u0000", "q\n1"]) {
    for (const call of [
      client.getTrack({ vehicleId, from: ts(T0), to: ts(T0 + 1000) }, all),
      client.getStats({ vehicleId, from: ts(T0), to: ts(T0 + 1000) }, all),
      replay({ target: { case: "vehicleId", value: vehicleId }, from: ts(T0), to: ts(T0 + 1000), speed: 1 }),
    ]) {
      const err = await code(call);
      expect(err?.code).toBe(Code.InvalidArgument);
      expect(err?.message).toContain("vehicle_id has a control character");
    }
  }
  const far = { seconds: 10n ** 15n, nanos: 0 };
  const negativeNanos = { seconds: BigInt(T0 / 1000), nanos: -1 };
  for (const [from, to] of [
    [ts(T0), far],
    [negativeNanos, ts(T0 + 1000)],
  ] as const) {
    for (const call of [
      client.getTrack({ vehicleId: "q1", from, to }, all),
      client.getStats({ vehicleId: "q1", from, to }, all),
      replay({ target: { case: "vehicleId", value: "q1" }, from, to, speed: 1 }),
    ]) {
      const err = await code(call);
      expect(err?.code).toBe(Code.InvalidArgument);
      expect(err?.message).toMatch(/(from|to) .*out of range/);
    }
  }
});

test("track - an unknown vehicle is empty, not an error", async () => {
  const r = await client.getTrack({ vehicleId: "nobody", from: ts(T0), to: ts(T0 + 3600_000) }, all);
  expect(r.points.length).toBe(0);
  expect(r.totalPoints).toBe(0n);
});

test("track - only what the token grants", async () => {
  const fleetB = bearer(await fx.token({ fleets: ["fleet-b"] }));
  expect((await client.getTrack({ vehicleId: "q1", from: ts(T0), to: ts(T0 + 3600_000) }, fleetB)).points.length).toBe(0);
  expect((await client.getTrack({ vehicleId: "q2", from: ts(T0), to: ts(T0 + 3600_000) }, fleetB)).points.length).toBe(1);
  const order = bearer(await fx.token({ orders: ["fleet-b/o-9"] }));
  expect((await client.getTrack({ vehicleId: "q2", from: ts(T0), to: ts(T0 + 3600_000) }, order)).points.length).toBe(1);
  // The same order id of another fleet is another order.
  const otherFleet = bearer(await fx.token({ orders: ["fleet-a/o-9"] }));
  expect((await client.getTrack({ vehicleId: "q2", from: ts(T0), to: ts(T0 + 3600_000) }, otherFleet)).points.length).toBe(0);
  const none = await code(client.getTrack({ vehicleId: "q1", from: ts(T0), to: ts(T0 + 1000) }));
  expect(none?.code).toBe(Code.Unauthenticated);
});

test("stats - per hour from the rollup", async () => {
  const r = await client.getStats({ vehicleId: "q1", from: ts(T0), to: ts(T0 + 3 * 3600_000), bucket: StatsBucket.HOUR }, all);
  expect(r.rows.map((x) => Number(x.points))).toEqual([3600, 3600, 300]);
  expect(r.rows[0]!.maxSpeed).toBe(11);
  // The first hour: 3599 legs of 1e-4 degrees of longitude at 52.5°N (~6.77 m).
  expect(r.rows[0]!.distanceM).toBeGreaterThan(3599 * 6.7);
  expect(r.rows[0]!.distanceM).toBeLessThan(3599 * 6.85);
  const hidden = await client.getStats(
    { vehicleId: "q1", from: ts(T0), to: ts(T0 + 3600_000) },
    bearer(await fx.token({ fleets: ["fleet-b"] })),
  );
  expect(hidden.rows.length).toBe(0);
});

test("order grant - stats, track and replay hold only the time the vehicle served the order", async () => {
  const order = bearer(await fx.token({ orders: ["fleet-a/ORD-7"] }));
  const range = { vehicleId: "q4", from: ts(T0), to: ts(T0 + 2 * 3600_000) };
  const inOrder = (ms: number) => ms >= T0 + 4500_000 && ms < T0 + 6300_000;
  // Hour buckets: the first hour had no point of the order, and the second only 180 of its 360.
  const hours = await client.getStats({ ...range, bucket: StatsBucket.HOUR }, order);
  expect(hours.rows.map((r) => [Number(r.bucketStart!.seconds) * 1000 - T0, Number(r.points)])).toEqual([[3600_000, 180]]);
  expect(hours.rows[0]!.maxSpeed).toBe(5);
  expect(hours.rows[0]!.meanSpeed).toBe(5);
  // 179 legs of 10 s at 1e-4 degrees of latitude a second step (pointAt moves 1e-4 per seq): ~11.1 m each.
  expect(hours.rows[0]!.distanceM).toBeGreaterThan(179 * 11);
  expect(hours.rows[0]!.distanceM).toBeLessThan(179 * 11.2);
  const minutes = await client.getStats({ ...range, bucket: StatsBucket.MINUTE }, order);
  expect(minutes.rows.length).toBe(30);
  expect(minutes.rows.every((r) => inOrder(Number(r.bucketStart!.seconds) * 1000))).toBe(true);
  // The whole vehicle's stats are unchanged for a token that sees it.
  const whole = await client.getStats({ ...range, bucket: StatsBucket.HOUR }, all);
  expect(whole.rows.map((r) => Number(r.points))).toEqual([360, 360]);
  expect(whole.rows[1]!.maxSpeed).toBe(20);

  const track = await client.getTrack({ ...range, maxPoints: 1000 }, order);
  expect(track.totalPoints).toBe(180n);
  expect(track.points.every((p) => p.orderId === "ORD-7" && inOrder(Number(p.recordedAt!.seconds) * 1000))).toBe(true);
  let replayed = 0;
  for await (const m of client.replay(
    { target: { case: "vehicleId", value: "q4" }, from: range.from, to: range.to, speed: 100_000 },
    order,
  )) {
    for (const p of m.positions) {
      expect(inOrder(Number(p.recordedAt!.seconds) * 1000)).toBe(true);
      replayed++;
    }
  }
  expect(replayed).toBe(180);
  // The same order id under another fleet is not this order.
  const other = await client.getStats({ ...range, bucket: StatsBucket.HOUR }, bearer(await fx.token({ orders: ["fleet-b/ORD-7"] })));
  expect(other.rows.length).toBe(0);
});

test("replay - speed must be above zero", async () => {
  for (const speed of [0, -2]) {
    const err = await code(
      (async () => {
        for await (const _ of client.replay({ target: { case: "vehicleId", value: "q1" }, from: ts(T0), to: ts(T0 + 1000), speed }, all));
      })(),
    );
    expect(err?.code).toBe(Code.InvalidArgument);
    expect(err?.message).toContain("speed must be above 0");
  }
});

test("replay - original timing, scaled", async () => {
  const started = performance.now();
  const got: number[] = [];
  const arrivals: number[] = [];
  for await (const m of client.replay({ target: { case: "vehicleId", value: "q1" }, from: ts(T0), to: ts(T0 + 20_000), speed: 20 }, all)) {
    for (const p of m.positions) got.push(Number(p.recordedAt!.seconds) * 1000 - T0);
    arrivals.push(performance.now() - started);
  }
  expect(got).toEqual(Array.from({ length: 20 }, (_, i) => i * 1000));
  // 19 s of driving at 20x is ~950 ms; the points came spread out, not at once.
  expect(arrivals.at(-1)! - arrivals[0]!).toBeGreaterThan(700);
});

test("replay - an area, only the vehicles inside", async () => {
  const area = { shape: { case: "box" as const, value: { minLat: 52.49, maxLat: 52.51, minLon: 13.39, maxLon: 13.41 } } };
  const vehicles = new Set<string>();
  let n = 0;
  for await (const m of client.replay({ target: { case: "area", value: area }, from: ts(T0), to: ts(T0 + 60_000), speed: 1000 }, all)) {
    for (const p of m.positions) {
      vehicles.add(p.vehicleId);
      n++;
      expect(p.lon).toBeLessThanOrEqual(13.41);
    }
  }
  expect([...vehicles].sort()).toEqual(["q1", "q2"]);
  expect(n).toBe(61); // q1's first minute, and q2
  const bad = await code(
    (async () => {
      for await (const _ of client.replay(
        {
          target: { case: "area", value: { shape: { case: "circle", value: { lat: 52, lon: 13, radiusM: 0 } } } },
          from: ts(T0),
          to: ts(T0 + 1000),
          speed: 1,
        },
        all,
      ));
    })(),
  );
  expect(bad?.code).toBe(Code.InvalidArgument);
});

test("metrics - rows written and commit latency on /metrics", async () => {
  const text = await (await fetch(`${history.adminUrl}/metrics`)).text();
  expect(text).toMatch(/history_rows_written_total\{[^}]*\} [1-9]/);
  expect(text).toContain("history_batch_commit_seconds_bucket");
  expect(text).toContain("history_consumer_lag_messages");
});
