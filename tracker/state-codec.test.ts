import { describe, expect, test } from "bun:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PositionSchema, VehicleStatus } from "../gen/fleet/v1/position_pb";
import { apiState, decodeLive, decodeState, encodeLive, FIXED_BYTES, LiveKind, packPoint, peekLive, toVehicleState } from "./state-codec";

const p = (over = {}) =>
  create(PositionSchema, {
    vehicleId: "truck-7",
    seq: 4_000_000_000,
    recordedAt: timestampFromMs(1_763_000_000_123),
    receivedAt: timestampFromMs(1_763_000_000_200),
    lat: -33.8688123,
    lon: 151.2093456,
    speed: 12.25,
    heading: 271.5,
    accuracy: 4.5,
    fleetId: "north",
    orderId: "o-17",
    status: VehicleStatus.ON_DELIVERY,
    ...over,
  });

describe("state codec", () => {
  test("pack - keeps what the API shows, to the stored precision", () => {
    const rec = packPoint(p(), 1_763_000_000_300);
    expect(rec.length).toBe(FIXED_BYTES + "north".length + "o-17".length);
    const s = decodeState(rec);
    expect(s).toMatchObject({
      rev: 0,
      seq: 4_000_000_000,
      recordedAtMs: 1_763_000_000_123,
      status: VehicleStatus.ON_DELIVERY,
      online: true,
      fleetId: "north",
      orderId: "o-17",
    });
    expect(s.lastSeenMs).toBe(1_763_000_000_200); // the gateway's received_at, not the tracker's clock
    expect(s.lat).toBeCloseTo(-33.8688123, 7);
    expect(s.lon).toBeCloseTo(151.2093456, 7);
    expect(s.speed).toBe(12.25);
    expect(s.heading).toBe(271.5);
    expect(s.accuracy).toBe(4.5);
  });

  test("pack - a vehicle cannot report itself OFFLINE; odd floats are clamped, not wrapped", () => {
    const s = decodeState(packPoint(p({ status: VehicleStatus.OFFLINE, speed: Number.NaN, accuracy: 1e9, orderId: "", fleetId: "" }), 5));
    expect(s.status).toBe(VehicleStatus.UNSPECIFIED);
    expect(s.speed).toBe(0);
    expect(s.accuracy).toBe(6553.5);
    expect(s.fleetId).toBe("");
    expect(s.orderId).toBe("");
  });

  test("decode - refuses a record shorter than its fixed part", () => {
    expect(() => decodeState(new Uint8Array(10))).toThrow(RangeError);
  });

  test("live - round trip, and an offline state shows status OFFLINE", () => {
    const rec = packPoint(p({ vehicleId: "vé-1" }), 1);
    rec[39] = 0;
    const e = decodeLive(encodeLive(LiveKind.Offline, "vé-1", rec));
    expect(e.kind).toBe(LiveKind.Offline);
    expect(e.vehicleId).toBe("vé-1");
    const v = toVehicleState(e.vehicleId, e.state);
    expect(v.online).toBe(false);
    expect(v.status).toBe(VehicleStatus.OFFLINE);
    expect(v.orderId).toBe("o-17");
  });

  test("peek - reads what decodeLive reads, from a message inside a larger buffer, ASCII or not; short input is a RangeError", () => {
    for (const id of ["truck-7", "vé-1", "車両-🚚", ""]) {
      const rec = packPoint(p({ vehicleId: id, lat: -89.5, lon: -179.25 }), 1);
      rec.writeUInt32LE(0xfffffffe, 0);
      const msg = encodeLive(LiveKind.Point, id, rec);
      // As NATS hands a payload: a view into a bigger buffer, at an offset.
      const big = new Uint8Array(msg.length + 20);
      big.set(msg, 7);
      const view = peekLive(big.subarray(7, 7 + msg.length));
      const full = decodeLive(msg);
      expect([view.kind, view.vehicleId, view.rev, view.lat, view.lon, view.status, view.online]).toEqual([
        full.kind,
        id,
        0xfffffffe,
        full.state.lat,
        full.state.lon,
        full.state.status,
        full.state.online,
      ]);
      expect(view.state).toEqual(full.state);
      expect(apiState(view)).toBe(apiState(view));
      expect(apiState(view)).toEqual(toVehicleState(id, full.state));
    }
    expect(() => peekLive(new Uint8Array(2))).toThrow(RangeError);
    expect(() => peekLive(Uint8Array.from([1, 200, 0, 65]))).toThrow(RangeError);
    expect(() => peekLive(encodeLive(LiveKind.Point, "x", new Uint8Array(FIXED_BYTES - 1)))).toThrow(RangeError);
  });
});
