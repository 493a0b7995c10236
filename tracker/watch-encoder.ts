/**
 * The bytes of a watch response (WatchVehiclesResponse and WatchAreaResponse share one shape:
 * `repeated VehicleEvent events = 1`), written by hand for the native gRPC path.
 *
 * Why: one update reaches every watch around the vehicle, and protobuf-es's reflective `toBinary`
 * of each response was the largest cost of serving area watches. Here a VehicleState is encoded
 * once per process (the watches share its object, see watch.ts) and each response is a few tags
 * around those bytes. The output is exactly what `toBinary` writes (watch-encoder.test.ts).
 */
import { toBinary } from "@bufbuild/protobuf";
import { VehicleStateSchema, type VehicleEvent, type VehicleState } from "../gen/fleet/v1/tracker_pb";
import { varintSize, writeVarint } from "../lib/varint";

const stateBytes = new WeakMap<VehicleState, Uint8Array>();

function encodedState(state: VehicleState): Uint8Array {
  let bytes = stateBytes.get(state);
  if (!bytes) {
    bytes = toBinary(VehicleStateSchema, state);
    stateBytes.set(state, bytes);
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
    const state = e.vehicle ? encodedState(e.vehicle) : undefined;
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
