/**
 * The bytes of a watch response (WatchVehiclesResponse and WatchAreaResponse share one shape:
 * `repeated VehicleEvent events = 1`), written by hand for the native gRPC path.
 *
 * Why: one update reaches every watch around the vehicle, and protobuf-es's reflective `create`
 * and `toBinary` of each state and response were a large share of a busy watch server's profile.
 * Here the state of a live event is written once per process straight from its stored record
 * (`liveEvent` events carry their LiveView; the message object is built only if something reads
 * `vehicle`, as connect's Connect and gRPC-Web paths do), and each response is a few tags around
 * those bytes. The output is exactly what `toBinary` writes (watch-encoder.test.ts).
 */
import { toBinary } from "@bufbuild/protobuf";
import {
  EventKind,
  NearbyResponseSchema,
  NearbyVehicleSchema,
  VehicleEventSchema,
  VehicleStateSchema,
  type NearbyResponse,
  type NearbyVehicle,
  type VehicleEvent,
  type VehicleState,
} from "../gen/fleet/v1/tracker_pb";
import { create } from "@bufbuild/protobuf";
import { VehicleStatus } from "../gen/fleet/v1/position_pb";
import { ProtoWriter, varintSize, writeVarint } from "../lib/wire";
import { apiState, toVehicleState, type LiveView, type StoredState } from "./state-codec";

const VIEW = Symbol("live view of the event");
type LiveEvent = VehicleEvent & { [VIEW]?: LiveView };

/**
 * A VehicleEvent of a live view: `vehicle` is made from the view when first read. An own getter,
 * not a class with one on its prototype (cheaper to make): protobuf-es and connect's JSON read a
 * message's own fields only, and such events came out without their vehicle (the tests say so).
 */
export function liveEvent(kind: EventKind, view: LiveView, coalesced: number): VehicleEvent {
  return {
    $typeName: "fleet.v1.VehicleEvent",
    kind,
    get vehicle(): VehicleState {
      return apiState(view);
    },
    coalesced,
    [VIEW]: view,
  } as LiveEvent;
}

/**
 * An EXIT that names the vehicle and nothing else: for a vehicle the token no longer sees (it took
 * another order, moved to another fleet), whose new state is none of the watcher's business.
 */
export function bareExit(vehicleId: string): VehicleEvent {
  return create(VehicleEventSchema, { kind: EventKind.EXIT, vehicle: { position: { vehicleId } } });
}

const position = new ProtoWriter();
const state = new ProtoWriter();

/** `toBinary(VehicleStateSchema, toVehicleState(vehicleId, s))`, written directly. */
export function encodeVehicleState(vehicleId: string, s: StoredState): Uint8Array {
  const status = s.online ? s.status : VehicleStatus.OFFLINE;
  const p = position;
  p.pos = 0;
  p.string(0x0a, vehicleId);
  p.ensure(96);
  if (s.seq !== 0) {
    p.byte(0x10);
    p.varint(s.seq);
  }
  p.timestampMs(0x1a, s.recordedAtMs);
  p.double(0x21, s.lat);
  p.double(0x29, s.lon);
  p.float(0x35, s.speed);
  p.float(0x3d, s.heading);
  p.float(0x45, s.accuracy);
  p.string(0x4a, s.orderId);
  p.ensure(16);
  if (status !== 0) {
    p.byte(0x50);
    p.varint(status);
  }
  p.string(0x5a, s.fleetId);
  const o = state;
  o.pos = 0;
  o.message(0x0a, p);
  o.ensure(16);
  if (status !== 0) {
    o.byte(0x10);
    o.varint(status);
  }
  o.string(0x1a, s.orderId);
  o.timestampMs(0x22, s.lastSeenMs);
  if (s.online) {
    o.ensure(2);
    o.byte(0x28);
    o.byte(1);
  }
  return o.bytes();
}

const stateBytes = new WeakMap<VehicleState, Uint8Array>();

function encodedState(e: VehicleEvent): Uint8Array | undefined {
  const view = (e as LiveEvent)[VIEW];
  if (view) return (view.wire ??= encodeVehicleState(view.vehicleId, view.state));
  const vehicle = e.vehicle;
  if (!vehicle) return undefined;
  let bytes = stateBytes.get(vehicle);
  if (!bytes) {
    bytes = toBinary(VehicleStateSchema, vehicle);
    stateBytes.set(vehicle, bytes);
  }
  return bytes;
}

/** Bytes of one VehicleEvent's body (without its own tag and length). */
function eventSize(e: VehicleEvent, state: Uint8Array | undefined): number {
  let n = 0;
  if (e.kind !== 0) n += 1 + varintSize(e.kind);
  if (state) n += 1 + varintSize(state.length) + state.length;
  if (e.coalesced !== 0) n += 1 + varintSize(e.coalesced);
  return n;
}

/** Encodes `{ events }` as protobuf: field 1 (events), each event kind = 1, vehicle = 2, coalesced = 3. */
export function encodeWatchResponse(response: { events: VehicleEvent[] }): Uint8Array {
  const { events } = response;
  const states: (Uint8Array | undefined)[] = new Array(events.length);
  const sizes: number[] = new Array(events.length);
  let total = 0;
  for (let i = 0; i < events.length; i++) {
    const e = events[i]!;
    const state = encodedState(e);
    const size = eventSize(e, state);
    states[i] = state;
    sizes[i] = size;
    total += 1 + varintSize(size) + size;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (let i = 0; i < events.length; i++) {
    const e = events[i]!;
    const state = states[i];
    out[at++] = 0x0a; // events: field 1, length-delimited
    at = writeVarint(out, at, sizes[i]!);
    if (e.kind !== 0) {
      out[at++] = 0x08; // kind: field 1, varint
      at = writeVarint(out, at, e.kind);
    }
    if (state) {
      out[at++] = 0x12; // vehicle: field 2, length-delimited
      at = writeVarint(out, at, state.length);
      out.set(state, at);
      at += state.length;
    }
    if (e.coalesced !== 0) {
      out[at++] = 0x18; // coalesced: field 3, varint
      at = writeVarint(out, at, e.coalesced);
    }
  }
  return out;
}

/** One vehicle of a Nearby answer, as the store gave it. */
export interface NearbyResult {
  vehicleId: string;
  state: StoredState;
  distanceM: number;
}

const HITS = Symbol("nearby hits of the response");
type LazyNearbyResponse = NearbyResponse & { [HITS]?: readonly NearbyResult[] };

/**
 * A NearbyResponse of these hits whose `vehicles` are made when first read (connect's Connect and
 * gRPC-Web paths read them); the native gRPC path writes it with encodeNearbyResponse, straight
 * from the states. A Nearby call made ~27 KB of garbage, most of it these messages, and the
 * tracker's GC pauses were its tail (README, Benchmarks).
 */
export function nearbyResponse(hits: readonly NearbyResult[]): NearbyResponse {
  let vehicles: NearbyVehicle[] | undefined;
  return {
    $typeName: "fleet.v1.NearbyResponse",
    get vehicles(): NearbyVehicle[] {
      return (vehicles ??= hits.map((h) =>
        create(NearbyVehicleSchema, { vehicle: toVehicleState(h.vehicleId, h.state), distanceM: h.distanceM }),
      ));
    },
    [HITS]: hits,
  } as LazyNearbyResponse;
}

/** `toBinary(NearbyResponseSchema, response)`: vehicles = 1, each vehicle = 1, distance_m = 2 (a double, left out when 0). */
export function encodeNearbyResponse(response: NearbyResponse): Uint8Array {
  const hits = (response as LazyNearbyResponse)[HITS];
  if (!hits) return toBinary(NearbyResponseSchema, response);
  const states = hits.map((h) => encodeVehicleState(h.vehicleId, h.state));
  let total = 0;
  const sizes = hits.map((h, i) => {
    const size = 1 + varintSize(states[i]!.length) + states[i]!.length + (h.distanceM !== 0 ? 9 : 0);
    total += 1 + varintSize(size) + size;
    return size;
  });
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  let at = 0;
  hits.forEach((h, i) => {
    const state = states[i]!;
    out[at++] = 0x0a; // vehicles: field 1, length-delimited
    at = writeVarint(out, at, sizes[i]!);
    out[at++] = 0x0a; // vehicle: field 1, length-delimited
    at = writeVarint(out, at, state.length);
    out.set(state, at);
    at += state.length;
    if (h.distanceM !== 0) {
      out[at++] = 0x11; // distance_m: field 2, 64-bit
      view.setFloat64(at, h.distanceM, true);
      at += 8;
    }
  });
  return out;
}
