import { expect, test } from "bun:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PositionBatchSchema, PositionSchema, VehicleStatus } from "../gen/fleet/v1/position_pb";
import { decodeBatchRows } from "./batch-decoder";
import { rowsOf } from "./row";

const batch = (positions: Parameters<typeof create<typeof PositionSchema>>[1][]) =>
  create(PositionBatchSchema, { positions: positions.map((p) => create(PositionSchema, p)) });

test("batch decoder - the same rows as protobuf-es, field by field", () => {
  const b = batch([
    {
      vehicleId: "truck-9",
      seq: 4_000_000_000,
      recordedAt: { seconds: 1_790_000_000n, nanos: 123_456_789 },
      lat: 52.123456789,
      lon: -13.4,
      speed: 8.3,
      heading: 271.5,
      accuracy: 4.2,
      orderId: "o-1",
      status: VehicleStatus.ON_DELIVERY,
      fleetId: "north",
      receivedAt: timestampFromMs(1_790_000_000_200),
    },
    { vehicleId: "vélo-ü", seq: 1, recordedAt: timestampFromMs(0), lat: -90, lon: 180 },
    { vehicleId: "no-time", seq: 2 },
    {},
  ]);
  const bytes = toBinary(PositionBatchSchema, b);
  const rows = decodeBatchRows(bytes);
  expect(rows).toEqual(rowsOf(fromBinary(PositionBatchSchema, bytes).positions));
  expect(rows[0]!.us).toBe(1_790_000_000_123_456);
  expect(rows[0]!.speed).toBe(Math.fround(8.3));
  expect(Number.isNaN(rows[2]!.us)).toBe(true);
});

test("batch decoder - unknown fields and repeated fields go through protobuf-es", () => {
  const b = batch([{ vehicleId: "v", seq: 1, recordedAt: timestampFromMs(1000) }]);
  const bytes = toBinary(PositionBatchSchema, b);
  // Append an unknown field (15, varint 7) inside the position: the fallback ignores it, as protobuf-es does.
  const inner = bytes.subarray(2);
  const withUnknown = new Uint8Array([0x0a, inner.length + 2, ...inner, 0x78, 0x07]);
  expect(decodeBatchRows(withUnknown)).toEqual(rowsOf(b.positions));
  // vehicle_id twice: the last wins in protobuf.
  const twice = new Uint8Array([0x0a, 6, 0x0a, 1, 0x61, 0x0a, 1, 0x62]);
  expect(decodeBatchRows(twice)[0]!.vehicleId).toBe("b");
});

test("batch decoder - bytes that are not a PositionBatch throw", () => {
  expect(() => decodeBatchRows(new Uint8Array([0x0a, 0x50, 0x01]))).toThrow();
});

test("batch decoder - ids are made once and reused, and two ids whose hashes collide stay apart", () => {
  // "Aa" and "BB" have the same hash (h = 31·h + byte, from the length).
  const b = batch(
    ["Aa", "BB", "Aa", "BB", "Aa"].map((vehicleId, i) => ({
      vehicleId,
      seq: i + 1,
      recordedAt: timestampFromMs(1000 + i),
      fleetId: "north",
    })),
  );
  const rows = decodeBatchRows(toBinary(PositionBatchSchema, b));
  expect(rows.map((r) => r.vehicleId)).toEqual(["Aa", "BB", "Aa", "BB", "Aa"]);
  expect(rows.every((r) => r.fleetId === "north")).toBe(true);
  expect(decodeBatchRows(toBinary(PositionBatchSchema, b))).toEqual(rows);
});
