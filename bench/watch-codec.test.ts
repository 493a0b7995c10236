import { describe, expect, test } from "bun:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PositionSchema } from "../gen/fleet/v1/position_pb";
import { EventKind, VehicleEventSchema, VehicleStateSchema, WatchAreaResponseSchema } from "../gen/fleet/v1/tracker_pb";
import { readWatchResponse } from "./watch-codec";

describe("watch codec", () => {
  test("codec - reads each event's kind and recorded_at as protobuf-es wrote them", () => {
    const state = (ms: number | undefined) =>
      create(VehicleStateSchema, {
        position: create(PositionSchema, {
          vehicleId: "ü-1",
          seq: 7,
          recordedAt: ms === undefined ? undefined : timestampFromMs(ms),
          lat: 1.5,
          lon: -2,
          speed: 3,
          orderId: "o",
          fleetId: "f",
        }),
        orderId: "o",
        lastSeen: timestampFromMs(5),
        online: true,
      });
    const events = [
      create(VehicleEventSchema, { kind: EventKind.SNAPSHOT, vehicle: state(1_764_600_000_123) }),
      create(VehicleEventSchema, { kind: EventKind.SNAPSHOT_END }),
      create(VehicleEventSchema, { kind: EventKind.MOVE, vehicle: state(1_764_600_001_000), coalesced: 300 }),
      create(VehicleEventSchema, { kind: EventKind.EXIT, vehicle: state(undefined) }),
      create(VehicleEventSchema, { kind: EventKind.ENTER, vehicle: state(0) }),
    ];
    const bytes = toBinary(WatchAreaResponseSchema, create(WatchAreaResponseSchema, { events }));
    const padded = new Uint8Array(bytes.length + 10);
    padded.set(bytes, 5);
    expect(readWatchResponse(padded, 5, 5 + bytes.length)).toEqual([
      { kind: EventKind.SNAPSHOT, recordedAtMs: 1_764_600_000_123 },
      { kind: EventKind.SNAPSHOT_END, recordedAtMs: NaN },
      { kind: EventKind.MOVE, recordedAtMs: 1_764_600_001_000 },
      { kind: EventKind.EXIT, recordedAtMs: NaN },
      { kind: EventKind.ENTER, recordedAtMs: 0 },
    ]);
    expect(() => readWatchResponse(bytes.subarray(0, bytes.length - 3))).toThrow(RangeError);
  });
});
