import { describe, expect, test } from "bun:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  EventKind,
  NearbyResponseSchema,
  NearbyVehicleSchema,
  VehicleEventSchema,
  WatchAreaResponseSchema,
  WatchVehiclesResponseSchema,
} from "../gen/fleet/v1/tracker_pb";
import { PositionSchema, VehicleStatus } from "../gen/fleet/v1/position_pb";
import { VehicleStateSchema } from "../gen/fleet/v1/tracker_pb";
import { encodeLive, LiveKind, packPoint, peekLive, toVehicleState, type StoredState } from "./state-codec";
import {
  encodeNearbyResponse,
  encodeVehicleState,
  encodeWatchResponse,
  liveEvent,
  nearbyResponse,
  type NearbyResult,
} from "./watch-encoder";

const state = (over: Partial<StoredState> = {}): StoredState => ({
  rev: 7,
  seq: 42,
  recordedAtMs: 1_764_600_000_123,
  lastSeenMs: 1_764_600_000_456,
  lat: 48.8566,
  lon: -2.3522,
  speed: 12.34,
  heading: 359.99,
  accuracy: 4.2,
  status: VehicleStatus.ON_DELIVERY,
  online: true,
  fleetId: "north",
  orderId: "o-17",
  ...over,
});

describe("watch encoder", () => {
  test("encoder - writes exactly what protobuf-es writes, for every kind of event", () => {
    const v1 = toVehicleState("truck-9", state());
    const v2 = toVehicleState(
      "fahrzeug-ü-€-🚚",
      state({ online: false, orderId: "", fleetId: "", speed: 0, lat: -89.9999999, lon: 179.9999999 }),
    );
    const v3 = toVehicleState("x".repeat(128), state({ seq: 4_294_967_295, rev: 0, orderId: "o".repeat(200) }));
    const cases = [
      [],
      [create(VehicleEventSchema, { kind: EventKind.SNAPSHOT_END })],
      [create(VehicleEventSchema, { kind: EventKind.SNAPSHOT, vehicle: v1 }), create(VehicleEventSchema, { kind: EventKind.SNAPSHOT_END })],
      [create(VehicleEventSchema, { kind: EventKind.MOVE, vehicle: v1, coalesced: 3 })],
      [
        create(VehicleEventSchema, { kind: EventKind.OFFLINE, vehicle: v2, coalesced: 300_000 }),
        create(VehicleEventSchema, { kind: EventKind.EXIT, vehicle: v3 }),
      ],
      [create(VehicleEventSchema, { vehicle: v1 })],
      Array.from({ length: 500 }, (_, i) => create(VehicleEventSchema, { kind: EventKind.ENTER, vehicle: i % 2 ? v1 : v3, coalesced: i })),
    ];
    for (const events of cases) {
      const area = create(WatchAreaResponseSchema, { events });
      const vehicles = create(WatchVehiclesResponseSchema, { events });
      expect(encodeWatchResponse(area)).toEqual(toBinary(WatchAreaResponseSchema, area));
      expect(encodeWatchResponse(vehicles)).toEqual(toBinary(WatchVehiclesResponseSchema, vehicles));
      // A second response with the same state objects uses the cached bytes: still the same.
      expect(encodeWatchResponse(area)).toEqual(toBinary(WatchAreaResponseSchema, area));
      expect(fromBinary(WatchAreaResponseSchema, encodeWatchResponse(area)).events.map((e) => e.kind)).toEqual(events.map((e) => e.kind));
    }
  });

  const odd: StoredState[] = [
    state(),
    state({ online: false, orderId: "", fleetId: "", speed: 0, heading: 0, accuracy: 0, lat: 0, lon: 0, seq: 0 }),
    state({ recordedAtMs: 0, lastSeenMs: 999, status: VehicleStatus.UNSPECIFIED }),
    state({
      seq: 4_294_967_295,
      recordedAtMs: 8_640_000_000_000_000,
      lastSeenMs: 1000,
      lat: -90,
      lon: 180,
      speed: 655.35,
      heading: 655.35,
      accuracy: 6553.5,
    }),
    state({ fleetId: "flotte-ü-€-🚚", orderId: "o".repeat(300) }),
  ];

  test("encoder - a stored state is written as toBinary writes toVehicleState's message", () => {
    for (const s of odd) {
      for (const id of ["truck-9", "", "fahrzeug-ü-€-🚚", "x".repeat(128)]) {
        expect(encodeVehicleState(id, s)).toEqual(toBinary(VehicleStateSchema, toVehicleState(id, s)));
      }
    }
  });

  test("encoder - events of live views encode from the record, and read as messages where connect reads them", () => {
    for (const s of odd) {
      const rec = packPoint(
        create(PositionSchema, {
          vehicleId: "v-1",
          seq: s.seq,
          lat: s.lat,
          lon: s.lon,
          fleetId: s.fleetId,
          orderId: s.orderId,
          status: s.status,
        }),
        s.lastSeenMs,
      );
      const view = peekLive(encodeLive(LiveKind.Point, "v-1", rec));
      const events = [
        liveEvent(EventKind.ENTER, view, 0),
        liveEvent(EventKind.MOVE, view, 7),
        create(VehicleEventSchema, { kind: EventKind.SNAPSHOT_END }),
      ];
      const area = create(WatchAreaResponseSchema, { events });
      // toBinary reads each event's `vehicle` (the message made from the view); the encoder writes the record.
      expect(encodeWatchResponse(area)).toEqual(toBinary(WatchAreaResponseSchema, area));
      expect(events[0]!.vehicle).toEqual(toVehicleState("v-1", view.state));
    }
  });

  test("encoder - a Nearby answer is written as protobuf-es writes it, and reads as its messages", () => {
    const cases: NearbyResult[][] = [
      [],
      [{ vehicleId: "truck-9", state: state(), distanceM: 0 }],
      [
        { vehicleId: "truck-9", state: state(), distanceM: 12.5 },
        { vehicleId: "fahrzeug-ü-€-🚚", state: state({ online: false, orderId: "", fleetId: "" }), distanceM: 1999.999 },
        { vehicleId: "x".repeat(300), state: state({ seq: 4_294_967_295, orderId: "o".repeat(200) }), distanceM: 1e-9 },
      ],
    ];
    for (const hits of cases) {
      const expected = create(NearbyResponseSchema, {
        vehicles: hits.map((h) => create(NearbyVehicleSchema, { vehicle: toVehicleState(h.vehicleId, h.state), distanceM: h.distanceM })),
      });
      const lazy = nearbyResponse(hits);
      expect(encodeNearbyResponse(lazy)).toEqual(toBinary(NearbyResponseSchema, expected));
      // What connect's other paths see: the messages, made on first read, and toBinary of them.
      expect(lazy.vehicles).toEqual(expected.vehicles);
      expect(toBinary(NearbyResponseSchema, lazy)).toEqual(toBinary(NearbyResponseSchema, expected));
      // A plain message (not from nearbyResponse) goes through protobuf-es.
      expect(encodeNearbyResponse(expected)).toEqual(toBinary(NearbyResponseSchema, expected));
    }
  });
});
