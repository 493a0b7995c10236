import { expect, test } from "bun:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PositionSchema } from "../gen/fleet/v1/position_pb";
import { binaryCopyRows, PG_EPOCH_US } from "../lib/storage";
import { copyText, positionsCopy, stagingText } from "./copy-rows";
import { prepareRows, rowsOf, type Row } from "./row";

test("copy rows - escapes backslash, tab and newlines in text", () => {
  expect(copyText("plain")).toBe("plain");
  expect(copyText("a\\b\tc\nd\re")).toBe("a\\\\b\\tc\\nd\\re");
});

test("copy rows - U+0000, which PostgreSQL's text cannot hold, becomes U+FFFD", () => {
  expect(copyText("o-1\u0000x")).toBe("o-1\uFFFDx");
  expect(copyText("\u0000\t\u0000")).toBe("\uFFFD\\t\uFFFD");
});

test("copy rows - one line per point with its day, none without recorded_at", () => {
  const ms = Date.UTC(2026, 10, 21, 12);
  const p = create(PositionSchema, {
    vehicleId: "v\t1",
    seq: 3,
    recordedAt: timestampFromMs(ms),
    lat: 52.5,
    lon: 13.4,
    speed: 2,
    fleetId: "f",
  });
  const bad = create(PositionSchema, { vehicleId: "v2", seq: 1 });
  const { rows, days } = prepareRows(rowsOf([p, bad]));
  expect(rows.length).toBe(1);
  expect([...days]).toEqual([Math.floor(ms / 86_400_000)]);
  expect(stagingText(rows)).toBe(`v\\t1\t${ms * 1000}\t3\tf\t52.5\t13.4\t2\t0\t0\t\t0\t\\N\n`);
});

test("copy rows - binary COPY of positions: every field in PostgreSQL's own bytes, read back by the archiver's reader", () => {
  const us = Date.UTC(2026, 10, 21, 12, 0, 58) * 1000 + 250; // µs that no ms clock has
  const row = (over: Partial<Row>): Row => ({
    vehicleId: "v-1",
    us,
    seq: 4_000_000_000,
    fleetId: "fleet-ä",
    lat: 52.123456789,
    lon: -13.987654321,
    speed: 8.5,
    heading: 359.75,
    accuracy: 3.25,
    orderId: "",
    status: 3,
    receivedUs: us + 40_000,
    ...over,
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
