import { afterAll, beforeAll, expect, test } from "bun:test";
import { create } from "@bufbuild/protobuf";
import { TimestampSchema } from "@bufbuild/protobuf/wkt";
import type { VehicleStatus } from "../../gen/fleet/v1/position_pb";
import { distanceM, EARTH_MEAN_RADIUS_M } from "../../lib/geo";
import { copyFailuresReported, copyFrom, hotDays, storageMode } from "../../lib/storage";
import { countRows, eventually, historyFixture, pointAt, type HistoryFixture } from "./helpers";

let fx: HistoryFixture;
beforeAll(async () => {
  fx = await historyFixture();
}, 60_000); // the test stack's servers start here (seconds on a busy machine; bun's hook default is 5 s)
afterAll(async () => {
  await fx?.close();
}, 30_000);

const T0 = Date.UTC(2026, 10, 20, 10, 0, 0);

test("writer - every point once, whatever is published again", async () => {
  await fx.start();
  const pts = Array.from({ length: 300 }, (_, i) => pointAt("w1", T0 + i * 1000, i + 1));
  await fx.publish(pts.slice(0, 200));
  // In order (a later batch overlapping an earlier one): the distance is exact. A batch of earlier
  // points landing after later ones misses the leg into the later ones (see history/README.md).
  await eventually(async () => (await countRows(fx.sql, "w1")) === 200, "the first 200 rows of w1");
  await fx.publish(pts.slice(100, 300)); // overlaps the first by 100 points
  await fx.publish(pts.slice(0, 50)); // re-sent points in a new message
  await eventually(async () => (await countRows(fx.sql, "w1")) === 300, "300 rows of w1");
  await Bun.sleep(300);
  expect(await countRows(fx.sql, "w1")).toBe(300);
  const [r] =
    await fx.sql`SELECT sum(points)::int AS points, sum(distance_m) AS d, max(max_speed) AS mx FROM positions_rollup WHERE vehicle_id = 'w1'`;
  expect(r!.points).toBe(300); // the rollup counted only new rows
  // 299 legs of 1e-4 degrees of latitude (~11.1 m each).
  expect(Number(r!.d)).toBeCloseTo(299 * 11.119, -1);
  expect(Number(r!.mx)).toBe(10);
});

test("writer - a COPY that PostgreSQL refuses is reported, and the transaction goes on after its savepoint", async () => {
  expect(copyFailuresReported).toBe(true); // the install patched postgres.js (patches/postgres+3.4.9.patch)
  const outcome = await fx.sql.begin(async (tx) => {
    await tx`CREATE TEMP TABLE copy_refused (k int PRIMARY KEY) ON COMMIT DROP`;
    await tx`INSERT INTO copy_refused VALUES (5)`;
    const failed = await tx
      .savepoint((sp) => copyFrom(sp, "COPY copy_refused FROM STDIN", "1\n5\n"))
      .then(
        () => "copied",
        (err: { code?: string }) => err.code,
      );
    await copyFrom(tx, "COPY copy_refused FROM STDIN", "6\n");
    const [row] = await tx`SELECT count(*)::int AS n FROM copy_refused`;
    return { failed, n: row!.n as number };
  });
  expect(outcome).toEqual({ failed: "23505", n: 2 });
});

test("writer - every column as sent: µs times, full float8 coordinates, float4 values, non-ASCII text, no received_at", async () => {
  const recordedAt = create(TimestampSchema, { seconds: BigInt(T0 / 1000) + 7n, nanos: 123_456_789 });
  const receivedAt = create(TimestampSchema, { seconds: BigInt(T0 / 1000) + 7n, nanos: 200_000_000 });
  const over = {
    lat: 52.123456789012,
    lon: -13.98765432101,
    speed: 8.5,
    heading: 359.75,
    accuracy: 3.25,
    fleetId: "flotte-ä",
    orderId: "Bestellung ✓",
    status: 3 as VehicleStatus,
  };
  await fx.publish([
    pointAt("w-cols", 0, 7, { ...over, recordedAt, receivedAt }),
    pointAt("w-cols", 0, 8, { ...over, recordedAt: create(TimestampSchema, { seconds: BigInt(T0 / 1000) + 8n }), receivedAt: undefined }),
  ]);
  await eventually(async () => (await countRows(fx.sql, "w-cols")) === 2, "2 rows of w-cols");
  const rows = await fx.sql`
    SELECT seq::int, (extract(epoch FROM recorded_at) * 1000000)::int8::text AS us, fleet_id, lat, lon, speed, heading, accuracy, order_id, status,
           (extract(epoch FROM received_at) * 1000000)::int8::text AS received_us
    FROM positions WHERE vehicle_id = 'w-cols' ORDER BY seq`;
  expect(rows[0]).toEqual({
    seq: 7,
    us: String((T0 / 1000 + 7) * 1_000_000 + 123_456),
    fleet_id: "flotte-ä",
    lat: 52.123456789012,
    lon: -13.98765432101,
    speed: 8.5,
    heading: 359.75,
    accuracy: 3.25,
    order_id: "Bestellung ✓",
    status: 3,
    received_us: String((T0 / 1000 + 7) * 1_000_000 + 200_000),
  });
  expect(rows[1]!.received_us).toBeNull();
});

test("writer - a NUL in a text that reached the stream is stored as U+FFFD, and the points after it are written", async () => {
  // The gateway refuses such ids; a fleet from a token or another publisher could still send one.
  await fx.publish([pointAt("w-nul", T0, 1, { orderId: "o-1\u0000x", fleetId: "f\u0000" }), pointAt("w-nul", T0 + 1000, 2)]);
  await fx.publish([pointAt("w-nul", T0 + 2000, 3)]);
  await eventually(async () => (await countRows(fx.sql, "w-nul")) === 3, "3 rows of w-nul");
  const [r] = await fx.sql`SELECT order_id, fleet_id FROM positions WHERE vehicle_id = 'w-nul' AND seq = 1`;
  expect(r).toEqual({ order_id: "o-1\uFFFDx", fleet_id: "f\uFFFD" });
});

test("writer - a point PostgreSQL can never take is parked with its error; its neighbours and the points after it are written", async () => {
  // The gateway refuses both; another publisher could still send them.
  const farFuture = create(TimestampSchema, { seconds: 2n ** 48n, nanos: 0 }); // no Date holds it
  await fx.publish([
    pointAt("w-park", T0, 1),
    pointAt("w-park", T0 + 1000, 2, { status: 70000 as VehicleStatus }),
    pointAt("w-park", T0 + 2000, 3),
  ]);
  await fx.publish([pointAt("w-park", T0 + 3000, 4, { recordedAt: farFuture })]);
  await fx.publish([pointAt("w-park", T0 + 4000, 5)]);
  await eventually(async () => (await countRows(fx.sql, "w-park")) === 3, "the 3 good rows of w-park");
  const parkedOf = () =>
    fx.sql`SELECT convert_from(point, 'UTF8')::jsonb AS point, error FROM positions_parked WHERE convert_from(point, 'UTF8')::jsonb->>'vehicleId' = 'w-park' ORDER BY id`;
  await eventually(async () => (await parkedOf()).length === 2, "2 parked points of w-park");
  const parked = await parkedOf();
  expect(parked.map((r) => r.point.seq)).toEqual([2, 4]);
  expect(parked[0]!.error).toContain("smallint");
  expect(parked[1]!.error).toContain("RangeError");
  const [stored] = await fx.sql`SELECT array_agg(seq::int ORDER BY seq) AS seqs FROM positions WHERE vehicle_id = 'w-park'`;
  expect(stored!.seqs).toEqual([1, 3, 5]);
});

test("writer - a day without a partition (or chunk) gets one, and the rollup spans batches", async () => {
  const old = Date.UTC(2026, 9, 1, 23, 59, 58);
  await fx.publish([pointAt("w2", old, 1)]);
  await fx.publish([pointAt("w2", old + 1000, 2), pointAt("w2", old + 2000, 3), pointAt("w2", old + 3000, 4)]);
  await eventually(async () => (await countRows(fx.sql, "w2")) === 4, "4 rows of w2");
  // Day partitions in plain mode, hypertable chunks in Timescale mode: the days are hot either way.
  const mode = await storageMode(fx.sql);
  expect(await hotDays(fx.sql, mode)).toEqual(expect.arrayContaining(["2026-10-01", "2026-10-02"]));
  if (mode === "plain") {
    const parts =
      await fx.sql`SELECT relname FROM pg_class WHERE relname IN ('positions_p20261001', 'positions_p20261002') AND relnamespace = current_schema()::regnamespace`;
    expect(parts.length).toBe(2);
  }
  const [r] = await fx.sql`SELECT sum(points)::int AS points, sum(distance_m) AS d FROM positions_rollup WHERE vehicle_id = 'w2'`;
  expect(r!.points).toBe(4);
  expect(Number(r!.d)).toBeCloseTo(3 * 11.119, 0); // the leg from the first batch's point is counted
});

test("writer - two processes on one consumer store each point once", async () => {
  await fx.start(); // a second instance on the same durable consumer
  const msgs = 40;
  for (let m = 0; m < msgs; m++) {
    await fx.publish(Array.from({ length: 50 }, (_, i) => pointAt(`w3-${m % 7}`, T0 + (m * 50 + i) * 1000, m * 50 + i + 1)));
  }
  await eventually(async () => (await countRows(fx.sql, "w3-%")) === msgs * 50, "every w3 point");
  const [r] = await fx.sql`SELECT sum(points)::int AS points FROM positions_rollup WHERE vehicle_id LIKE 'w3-%'`;
  expect(r!.points).toBe(msgs * 50);
});

test("writer - PostgreSQL restarted mid-stream: nothing lost, nothing doubled", async () => {
  let published = 0;
  let stop = false;
  const pump = (async () => {
    for (let m = 0; !stop; m++) {
      await fx.publish(Array.from({ length: 20 }, (_, i) => pointAt("w4", T0 + (m * 20 + i) * 1000, m * 20 + i + 1)));
      published += 20;
      await Bun.sleep(10);
    }
  })();
  await eventually(async () => (await countRows(fx.sql, "w4")) > 100, "some w4 rows before the restart");
  await fx.stack.stopService("postgres", "SIGKILL");
  await Bun.sleep(1500);
  await fx.stack.startService("postgres");
  await Bun.sleep(500);
  stop = true;
  await pump;
  await eventually(async () => (await countRows(fx.sql, "w4")) === published, `all ${published} w4 rows`, 60_000);
  const [dups] =
    await fx.sql`SELECT count(*)::int AS n FROM (SELECT recorded_at FROM positions WHERE vehicle_id = 'w4' GROUP BY 1 HAVING count(*) > 1) d`;
  expect(dups!.n).toBe(0);
  const [r] = await fx.sql`SELECT sum(points)::int AS points FROM positions_rollup WHERE vehicle_id = 'w4'`;
  expect(r!.points).toBe(published);
}, 90_000);

test("writer - the rollup's legs inside a batch (lib/geo.ts) measure as PostgreSQL's fleet_distance_m measures the first", async () => {
  const legs = [
    [52.52, 13.405, 52.3906, 13.0645],
    [0, 0, 0, 1],
    [-33.8688, 151.2093, -33.8689, 151.2094],
    [10, 179.9999, 10, -179.9999],
  ];
  for (const [a, b, c, d] of legs) {
    const [r] = await fx.sql`SELECT fleet_distance_m(${a!}, ${b!}, ${c!}, ${d!}) AS m`;
    expect(Math.abs(Number(r!.m) - distanceM(a!, b!, c!, d!, EARTH_MEAN_RADIUS_M))).toBeLessThan(1e-6);
  }
});
