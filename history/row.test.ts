import { expect, test } from "bun:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PositionSchema } from "../gen/fleet/v1/position_pb";
import { prepareRows, rowsOf, timestampMicros } from "./row";

test("row - times are exact microseconds", () => {
  expect(timestampMicros({ seconds: 1_700_000_000n, nanos: 123_456_789 } as never)).toBe(1_700_000_000_123_456);
});

test("row - a point twice in one batch is written once; rows come in key order", () => {
  const ms = Date.UTC(2026, 10, 21, 12);
  const at = (vehicleId: string, s: number) =>
    create(PositionSchema, { vehicleId, seq: 1, recordedAt: timestampFromMs(ms + s * 1000), lat: 1, lon: 2 });
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
