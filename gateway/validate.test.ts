import { describe, expect, test } from "bun:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { RejectReason } from "../gen/fleet/v1/ingest_pb";
import { PositionSchema, type Position, type VehicleStatus } from "../gen/fleet/v1/position_pb";
import { validatePosition } from "./validate";

const now = Date.parse("2026-01-01T12:00:00Z");
const opts = { maxClockSkew: 30_000, maxPointAge: 7 * 86_400_000, maxSpeed: 100 };
const good = (over: Partial<Position> = {}): Position =>
  Object.assign(
    create(PositionSchema, {
      vehicleId: "v1",
      seq: 1,
      recordedAt: timestampFromMs(now - 1000),
      lat: 52.5,
      lon: 13.4,
      speed: 12,
      heading: 180,
      accuracy: 4,
    }),
    over,
  );
const reasonOf = (p: Position) => validatePosition(p, now, opts)?.reason;

describe("validate", () => {
  test("validate - accepts a plausible point", () => {
    expect(validatePosition(good(), now, opts)).toBeUndefined();
  });
  test("validate - accepts the edges of the ranges", () => {
    expect(reasonOf(good({ lat: 90, lon: -180, heading: 360, speed: 100, accuracy: 0 }))).toBeUndefined();
    expect(reasonOf(good({ lat: -90, lon: 180, heading: 0, speed: 0 }))).toBeUndefined();
  });
  test("validate - refuses NaN, Infinity and out-of-range coordinates", () => {
    for (const over of [{ lat: NaN }, { lon: NaN }, { lat: Infinity }, { lon: -Infinity }, { lat: 90.0001 }, { lon: -180.5 }]) {
      const r = validatePosition(good(over), now, opts);
      expect(r?.reason).toBe(RejectReason.INVALID_COORDINATES);
      expect(r?.message).toContain("lat");
    }
  });
  test("validate - refuses a time past the clock skew, with the reason", () => {
    const r = validatePosition(good({ recordedAt: timestampFromMs(now + 31_000) }), now, opts);
    expect(r?.reason).toBe(RejectReason.TIME_IN_FUTURE);
    expect(r?.message).toContain("future");
    expect(reasonOf(good({ recordedAt: timestampFromMs(now + 29_000) }))).toBeUndefined();
  });
  test("validate - refuses a point older than the max age", () => {
    expect(reasonOf(good({ recordedAt: timestampFromMs(now - 8 * 86_400_000) }))).toBe(RejectReason.TIME_TOO_OLD);
  });
  test("validate - refuses a missing time or seq", () => {
    expect(reasonOf(good({ recordedAt: undefined }))).toBe(RejectReason.INVALID_FIELD);
    expect(reasonOf(good({ seq: 0 }))).toBe(RejectReason.INVALID_FIELD);
  });
  test("validate - refuses implausible speeds", () => {
    for (const speed of [-1, NaN, Infinity, 100.5]) expect(reasonOf(good({ speed }))).toBe(RejectReason.IMPLAUSIBLE_SPEED);
  });
  test("validate - refuses heading and accuracy out of range", () => {
    for (const heading of [-0.1, 360.1, NaN]) expect(reasonOf(good({ heading }))).toBe(RejectReason.INVALID_FIELD);
    for (const accuracy of [-1, NaN, Infinity]) expect(reasonOf(good({ accuracy }))).toBe(RejectReason.INVALID_FIELD);
  });
  test("validate - refuses ids beyond the length bounds", () => {
    expect(reasonOf(good({ vehicleId: "" }))).toBe(RejectReason.INVALID_FIELD);
    expect(reasonOf(good({ vehicleId: "x".repeat(129) }))).toBe(RejectReason.INVALID_FIELD);
    expect(reasonOf(good({ orderId: "o".repeat(129) }))).toBe(RejectReason.INVALID_FIELD);
    expect(reasonOf(good({ orderId: "o".repeat(128) }))).toBeUndefined();
  });
  test("validate - refuses a status that is not a VehicleStatus (the enum is open: any int32 decodes)", () => {
    for (const status of [1, 3, 5]) expect(reasonOf(good({ status }))).toBeUndefined();
    const r = validatePosition(good({ status: 70000 as VehicleStatus }), now, opts);
    expect(r?.reason).toBe(RejectReason.INVALID_FIELD);
    expect(r?.message).toBe("status 70000 is not a VehicleStatus: send 0 to 5 (VEHICLE_STATUS_UNSPECIFIED … VEHICLE_STATUS_OFFLINE)");
    expect(reasonOf(good({ status: -1 as VehicleStatus }))).toBe(RejectReason.INVALID_FIELD);
  });
  test("validate - refuses control characters in ids (PostgreSQL's text cannot hold U+0000), naming them", () => {
    const nul = validatePosition(good({ orderId: "o-1\u0000x" }), now, opts);
    expect(nul?.reason).toBe(RejectReason.INVALID_FIELD);
    expect(nul?.message).toBe("order_id has a control character (U+0000) at position 3: send printable text");
    expect(validatePosition(good({ vehicleId: "v\n1" }), now, opts)?.message).toContain("vehicle_id has a control character (U+000A)");
    expect(reasonOf(good({ orderId: "o\u007f" }))).toBe(RejectReason.INVALID_FIELD);
    expect(reasonOf(good({ orderId: "Bestellung-ÄÖ-12 ✓", vehicleId: "lkw-ü-7" }))).toBeUndefined();
  });
});
