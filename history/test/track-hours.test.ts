/** Packed track hours (history/track-hours.ts): GetTrack reads them, a late point packs its hour again, a stale pack is never used. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import type { HistoryService } from "../../gen/fleet/v1/history_pb";
import { createLogger } from "../../lib/log";
import type { History } from "../history";
import { createTrackPacker, type TrackPacker } from "../track-hours";
import { bearer, countRows, eventually, historyFixture, pointAt, type HistoryFixture } from "./helpers";

let fx: HistoryFixture;
let history: History;
let client: Client<typeof HistoryService>;
let all: ReturnType<typeof bearer>;
let packer: TrackPacker;

const HOUR = 3_600_000;
/** Half past an hour, days ago: the track covers a half hour, two whole hours and a half hour. */
const T0 = Date.UTC(2026, 10, 3, 9, 30, 0);
const ts = timestampFromMs;
const track = () => client.getTrack({ vehicleId: "p1", from: ts(T0 - HOUR), to: ts(T0 + 4 * HOUR), maxPoints: 200 }, all);
const packs = async () =>
  (await fx.sql`SELECT extract(epoch FROM hour)::int8 * 1000 AS ms, points FROM track_hours WHERE vehicle_id = 'p1' ORDER BY hour`).map(
    (r) => [Number(r.ms), r.points],
  );

beforeAll(async () => {
  // No packing by the service itself: the test runs the packer when it wants to.
  fx = await historyFixture({ HISTORY_TRACK_PACK_INTERVAL: "0", HISTORY_TRACK_MAX_RANGE: "1d" });
  history = await fx.start();
  client = fx.client(history);
  all = bearer(await fx.token({ all: true }));
  packer = createTrackPacker({
    sql: fx.sql,
    mode: history.mode,
    schema: fx.schema,
    delayMs: 300_000,
    log: createLogger({ level: "error" }),
  });
  // A point every 10 s for 3 hours, turning every 20 minutes.
  const pts = Array.from({ length: 1080 }, (_, i) =>
    pointAt("p1", T0 + i * 10_000, i + 1, {
      lat: 52.5 + Math.floor(i / 120) * 1e-3 + (i % 120) * 1e-5 * (Math.floor(i / 120) % 2),
      lon: 13.4 + (i % 120) * 1e-5,
      heading: (Math.floor(i / 120) * 90) % 360,
    }),
  );
  for (let i = 0; i < pts.length; i += 200) await fx.publish(pts.slice(i, i + 200));
  await eventually(async () => (await countRows(fx.sql, "p1")) === 1080, "the p1 rows");
}, 60_000);
afterAll(async () => {
  await fx?.close();
}, 30_000);

test("track hours - the writer marks late hours, the packer packs them, and GetTrack answers the same from the packs", async () => {
  const before = await track();
  expect(before.totalPoints).toBe(1080n);
  // The hours were over long before the points came: the writer marked them.
  expect((await fx.sql`SELECT count(*)::int AS n FROM track_dirty WHERE vehicle_id = 'p1'`)[0]!.n).toBe(4);
  expect(await packer.run()).toBeGreaterThanOrEqual(4);
  expect((await fx.sql`SELECT count(*)::int AS n FROM track_dirty WHERE vehicle_id = 'p1'`)[0]!.n).toBe(0);
  expect(await packs()).toEqual([
    [T0 - HOUR / 2, 180],
    [T0 + HOUR / 2, 360],
    [T0 + (3 * HOUR) / 2, 360],
    [T0 + (5 * HOUR) / 2, 180],
  ]);
  const after = await track();
  expect(after.totalPoints).toBe(1080n);
  expect(after.points).toEqual(before.points);

  // The packs of the two whole hours are what GetTrack read: spoil one (same count), and its answer changes.
  await fx.sql`UPDATE track_hours SET light = decode(repeat('00', length(light)), 'hex') WHERE vehicle_id = 'p1' AND hour = ${new Date(T0 + HOUR / 2).toISOString()}::timestamptz`;
  expect((await track()).points).not.toEqual(before.points);
  await fx.sql`INSERT INTO track_dirty (vehicle_id, hour) VALUES ('p1', ${new Date(T0 + HOUR / 2).toISOString()}::timestamptz)`;
  await packer.run();
  expect((await track()).points).toEqual(before.points);
});

test("track hours - a late point is in GetTrack at once, and packed again by the next run", async () => {
  // Between two stored points of the second whole hour.
  const late = T0 + HOUR + 5_000;
  await fx.publish([pointAt("p1", late, 5000, { lat: 52.6, lon: 13.6 })]);
  await eventually(async () => (await countRows(fx.sql, "p1")) === 1081, "the late row");
  // Its pack counts one point less than the rollup: not used, the rows are read.
  const r = await track();
  expect(r.totalPoints).toBe(1081n);
  expect(r.points.some((p) => Number(p.recordedAt!.seconds) * 1000 === late)).toBe(true);
  await packer.run();
  expect((await packs())[1]).toEqual([T0 + HOUR / 2, 361]);
  const again = await track();
  expect(again.totalPoints).toBe(1081n);
  expect(again.points).toEqual(r.points);
});

test("track hours - a pack that does not count what the rollup counts is not used, and is marked to pack again", async () => {
  const before = await track();
  const hour = new Date(T0 + (3 * HOUR) / 2).toISOString();
  await fx.sql`UPDATE track_hours SET points = points - 1, light = decode(repeat('00', length(light)), 'hex') WHERE vehicle_id = 'p1' AND hour = ${hour}::timestamptz`;
  expect((await track()).points).toEqual(before.points);
  await eventually(
    async () =>
      (await fx.sql`SELECT count(*)::int AS n FROM track_dirty WHERE vehicle_id = 'p1' AND hour = ${hour}::timestamptz`)[0]!.n === 1,
    "the mark",
  );
  await packer.run();
  expect((await packs())[2]).toEqual([T0 + (3 * HOUR) / 2, 360]);
  expect((await track()).points).toEqual(before.points);
});

test("track hours - the packer moves its cursor over closed hours only, and packs each once", async () => {
  const now = Date.now();
  await packer.run(now);
  const [cursor] = await fx.sql`SELECT value FROM history_meta WHERE key = 'packed_until'`;
  const until = Date.parse(cursor!.value as string);
  expect(until % HOUR).toBe(0);
  expect(until).toBeLessThanOrEqual(now - 300_000 - 60_000);
  expect(until).toBeGreaterThan(now - 300_000 - 60_000 - HOUR);
  // Nothing new: a second run packs nothing.
  expect(await packer.run(now)).toBe(0);
});
