/**
 * History across the archive: a vehicle-day read before and after the archiver moved it to Parquet
 * on S3 gives the same track and the same replay; the caller cannot tell.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createArchiver, type Archiver } from "../archiver/archiver";
import { hotDays } from "../lib/storage";
import { bearer, countRows, eventually, historyFixture, pointAt, testConfig, type HistoryFixture } from "../history/test/helpers";

let fx: HistoryFixture;
let archiver: Archiver;
const DAY = "2026-10-20";
const T0 = Date.parse(`${DAY}T09:00:00Z`);

beforeAll(async () => {
  fx = await historyFixture();
  archiver = await createArchiver({ config: testConfig(fx.stack, fx.schema, { ARCHIVE_INTERVAL: "0", HISTORY_HOT_RETENTION: "1m" }) });
}, 30_000);
afterAll(async () => {
  await archiver?.close();
  await fx?.close();
}, 30_000);

test("history - track and replay are the same before and after the day is archived", async () => {
  const h = await fx.start();
  const client = fx.client(h);
  const all = bearer(await fx.token({ all: true }));
  const pts = Array.from({ length: 600 }, (_, i) => pointAt("e1", T0 + i * 1000, i + 1, { lon: 13.4 + (i % 100) * 1e-4, heading: 90 }));
  await fx.publish(pts);
  // A point of the next hot day too, so the range spans both.
  await fx.publish([pointAt("e1", Date.now() - 1000, 10_000)]);
  await eventually(async () => (await countRows(fx.sql, "e1")) === 601, "e1 rows");
  const req = { vehicleId: "e1", from: timestampFromMs(T0), to: timestampFromMs(T0 + 3600_000), maxPoints: 1000 };
  const before = await client.getTrack(req, all);
  const replay = async () => {
    const out: string[] = [];
    for await (const m of client.replay(
      { target: { case: "vehicleId", value: "e1" }, from: req.from, to: timestampFromMs(T0 + 60_000), speed: 1000 },
      all,
    )) {
      for (const p of m.positions) out.push(`${p.recordedAt!.seconds}:${p.lat.toFixed(7)}:${p.lon.toFixed(7)}:${p.speed}`);
    }
    return out;
  };
  const replayBefore = await replay();
  expect(replayBefore.length).toBe(60);

  expect(await hotDays(fx.sql, h.mode)).toContain(DAY); // in this storage mode, so that its absence below means something
  const r = await archiver.run();
  expect(r.days).toContain(DAY);
  expect(await hotDays(fx.sql, h.mode)).not.toContain(DAY);

  const after = await client.getTrack(req, all);
  expect(after.totalPoints).toBe(600n);
  expect(after.points.map((p) => [p.recordedAt!.seconds, p.lat.toFixed(7), p.lon.toFixed(7), p.fleetId])).toEqual(
    before.points.map((p) => [p.recordedAt!.seconds, p.lat.toFixed(7), p.lon.toFixed(7), p.fleetId]),
  );
  expect(await replay()).toEqual(replayBefore);
}, 60_000);
