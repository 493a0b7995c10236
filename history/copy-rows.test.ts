import { expect, test } from "bun:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PositionSchema } from "../gen/fleet/v1/position_pb";
import { binaryCopyRows, PG_EPOCH_US } from "../lib/storage";
import { rowsOf, type Row } from "./batch-decoder";
import { copyText, distanceM, positionsCopy, prepareRows, rollupOf, stagingText, timestampMicros } from "./copy-rows";

test("copy rows - escapes backslash, tab and newlines in text", () => {
  expect(copyText("plain")).toBe("plain");
  expect(copyText("a\\b\tc\nd\re")).toBe("a\\\\b\\tc\\nd\\re");
});

test("copy rows - U+0000, which PostgreSQL's text cannot hold, becomes U+FFFD", () => {
  expect(copyText("o-1\u0000x")).toBe("o-1\uFFFDx");
  expect(copyText("\u0000\t\u0000")).toBe("\uFFFD\\t\uFFFD");
});

test("copy rows - times are exact microseconds", () => {
  expect(timestampMicros({ seconds: 1_700_000_000n, nanos: 123_456_789 } as never)).toBe(1_700_000_000_123_456);
});

test("copy rows - one line per point with its day, none without recorded_at", () => {
  const ms = Date.UTC(2026, 10, 21, 12);
  const p = create(PositionSchema, { vehicleId: "v\t1", seq: 3, recordedAt: timestampFromMs(ms), lat: 52.5, lon: 13.4, speed: 2, fleetId: "f" });
  const bad = create(PositionSchema, { vehicleId: "v2", seq: 1 });
  const { rows, days } = prepareRows(rowsOf([p, bad]));
  expect(rows.length).toBe(1);
  expect([...days]).toEqual([Math.floor(ms / 86_400_000)]);
  expect(stagingText(rows)).toBe(`v\\t1\t${ms * 1000}\t3\tf\t52.5\t13.4\t2\t0\t0\t\t0\t\\N\n`);
});

test("copy rows - a point twice in one batch is written once; rows come in key order", () => {
  const ms = Date.UTC(2026, 10, 21, 12);
  const at = (vehicleId: string, s: number) => create(PositionSchema, { vehicleId, seq: 1, recordedAt: timestampFromMs(ms + s * 1000), lat: 1, lon: 2 });
  const p = at("v", 0);
  expect(prepareRows(rowsOf([p, p])).rows.length).toBe(1);
  const { rows, byVehicle } = prepareRows(rowsOf([at("b", 2), at("a", 5), at("b", 1), at("a", 3)]));
  expect(rows.map((r) => `${r.vehicleId}${(r.us / 1000 - ms) / 1000}`)).toEqual(["a3", "a5", "b1", "b2"]);
  expect(byVehicle.map((g) => g.map((r) => r.vehicleId).join(""))).toEqual(["aa", "bb"]);
  // Of two points of one vehicle and time, the first sent stays, wherever the second comes.
  const first = { ...at("c", 4), seq: 7 };
  const later = { ...at("c", 4), seq: 8 };
  const kept = prepareRows(rowsOf([at("c", 9), first, at("c", 1), later])).rows;
  expect(kept.map((r) => r.seq)).toEqual([1, 7, 1]);
});

test("copy rows - binary COPY of positions: every field in PostgreSQL's own bytes, read back by the archiver's reader", () => {
  const us = Date.UTC(2026, 10, 21, 12, 0, 58) * 1000 + 250; // µs that no ms clock has
  const row = (over: Partial<Row>): Row => ({
    vehicleId: "v-1", us, seq: 4_000_000_000, fleetId: "fleet-ä", lat: 52.123456789, lon: -13.987654321,
    speed: 8.5, heading: 359.75, accuracy: 3.25, orderId: "", status: 3, receivedUs: us + 40_000, ...over,
  });
  const data = positionsCopy([row({}), row({ vehicleId: "v\u00002", orderId: "Bestellung ✓", receivedUs: NaN, us: -1 })]);
  const rows = [...binaryCopyRows(Buffer.from(data))];
  expect(rows.length).toBe(2);
  const [a, b] = rows as Buffer[][];
  const pgUs = (f: Buffer) => Number(f.readBigInt64BE(0)) + PG_EPOCH_US;
  expect(a!.length).toBe(12);
  expect(a![0]!.toString("utf8")).toBe("v-1");
  expect(pgUs(a![1]!)).toBe(us);
  expect(a![2]!.readBigInt64BE(0)).toBe(4_000_000_000n);
  expect(a![3]!.toString("utf8")).toBe("fleet-ä");
  expect(a![4]!.readDoubleBE(0)).toBe(52.123456789);
  expect(a![5]!.readDoubleBE(0)).toBe(-13.987654321);
  expect([a![6]!.readFloatBE(0), a![7]!.readFloatBE(0), a![8]!.readFloatBE(0)]).toEqual([8.5, 359.75, 3.25]);
  expect(a![9]!.length).toBe(0);
  expect(a![10]!.readInt16BE(0)).toBe(3);
  expect(pgUs(a![11]!)).toBe(us + 40_000);
  expect(b![0]!.toString("utf8")).toBe("v\uFFFD2"); // text cannot hold U+0000
  expect(pgUs(b![1]!)).toBe(-1);
  expect(b![9]!.toString("utf8")).toBe("Bestellung ✓");
  expect(b![11]).toBeNull();
  expect(() => positionsCopy([row({ us: 2 ** 53 })])).toThrow(RangeError);
  expect(() => positionsCopy([row({ status: 70000 })])).toThrow("out of range for type smallint");
  // Each result is its own bytes: two writers' batches are encoded while the first is still to be sent.
  const before = Buffer.from(data);
  positionsCopy([row({ vehicleId: "other", seq: 1 })]);
  expect(Buffer.compare(Buffer.from(data), before)).toBe(0);
});

test("copy rows - rollup per vehicle and minute, legs inside the batch, first points for the rest", () => {
  const t = Date.UTC(2026, 10, 21, 12, 0, 58) * 1000;
  const base = { seq: 1, fleetId: "", heading: 0, accuracy: 0, orderId: "", status: 0, receivedUs: NaN };
  const pts: Row[] = [
    { ...base, vehicleId: "a", us: t + 2_000_000, lat: 0.0002, lon: 0, speed: 4 }, // next minute
    { ...base, vehicleId: "b", us: t, lat: 5, lon: 5, speed: 1 },
    { ...base, vehicleId: "a", us: t, lat: 0, lon: 0, speed: 2 },
    { ...base, vehicleId: "a", us: t + 1_000_000, lat: 0.0001, lon: 0, speed: 6 },
  ];
  // Out of order, as a batch may hold them: prepareRows puts each vehicle's points in time order.
  const { rows, firsts } = rollupOf(prepareRows(pts).byVehicle);
  expect(firsts.vehicle).toEqual(["a", "b"]);
  expect(firsts.us).toEqual([t, t]);
  expect(rows.vehicle).toEqual(["a", "a", "b"]);
  expect(rows.points).toEqual([2, 1, 1]);
  expect(rows.maxSpeed).toEqual([6, 4, 1]);
  expect(rows.sumSpeed).toEqual([8, 4, 1]);
  expect(rows.distance[0]).toBeCloseTo(11.12, 1);
  expect(rows.distance[1]).toBeCloseTo(11.12, 1); // the leg into the new minute counts there
  expect(rows.distance[2]).toBe(0);
  expect(distanceM(0, 0, 0, 1)).toBeCloseTo(111_195, -1);
});
