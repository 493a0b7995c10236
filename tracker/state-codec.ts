/**
 * The latest state of one vehicle as the tracker keeps it in Redis and sends it on the live
 * subjects: a fixed 41-byte little-endian record, then the fleet and order ids. Compact on purpose
 * (Redis memory per vehicle is a target), and the Lua scripts read and patch it in place with
 * `struct` (see newer-wins.lua).
 *
 *   0 rev u32        bumped by every change (point, status, offline): orders events per vehicle
 *   4 seq u32        the point's seq
 *   8 recorded f64   ms since the epoch
 *  16 lastSeen f64   ms since the epoch, when the gateway received the point (when the tracker took
 *                    it, if that is earlier or the point has no receive time)
 *  24 lat i32        1e-7 degrees
 *  28 lon i32        1e-7 degrees
 *  32 speed u16      0.01 m/s
 *  34 heading u16    0.01 degrees
 *  36 accuracy u16   0.1 m
 *  38 status u8      VehicleStatus (0 in a new point: keep the stored one)
 *  39 flags u8       bit 0: online
 *  40 fleetLen u8, then the fleet id (utf-8), then the order id (the rest)
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { VehicleStateSchema, type VehicleState } from "../gen/fleet/v1/tracker_pb";
import { PositionSchema, VehicleStatus, type Position } from "../gen/fleet/v1/position_pb";

export const FIXED_BYTES = 41;
const ONLINE = 1;

/** A stored state, decoded. */
export interface StoredState {
  rev: number;
  seq: number;
  recordedAtMs: number;
  lastSeenMs: number;
  lat: number;
  lon: number;
  speed: number;
  heading: number;
  accuracy: number;
  status: VehicleStatus;
  online: boolean;
  fleetId: string;
  orderId: string;
}

const clampU16 = (v: number) => (Number.isFinite(v) ? Math.max(0, Math.min(65535, Math.round(v))) : 0);
const tsMs = (t: { seconds: bigint; nanos: number } | undefined) => (t ? Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6) : 0);

/** Packs a point as it arrives (rev 0, online, status as reported) for newer-wins.lua; `nowMs` is last seen when the gateway did not say. */
export function packPoint(p: Position, nowMs: number): Buffer {
  const fleet = Buffer.from(p.fleetId.slice(0, 64), "utf8");
  const order = Buffer.from(p.orderId.slice(0, 128), "utf8");
  const fleetLen = Math.min(fleet.length, 255);
  const buf = Buffer.allocUnsafe(FIXED_BYTES + fleetLen + order.length);
  buf.writeUInt32LE(0, 0);
  buf.writeUInt32LE(p.seq >>> 0, 4);
  buf.writeDoubleLE(tsMs(p.recordedAt), 8);
  // Heard from when the gateway received the point (a replay after a restart is not news).
  buf.writeDoubleLE(p.receivedAt ? Math.min(tsMs(p.receivedAt), nowMs) : nowMs, 16);
  buf.writeInt32LE(Math.round(p.lat * 1e7), 24);
  buf.writeInt32LE(Math.round(p.lon * 1e7), 28);
  buf.writeUInt16LE(clampU16(p.speed * 100), 32);
  buf.writeUInt16LE(clampU16(p.heading * 100), 34);
  buf.writeUInt16LE(clampU16(p.accuracy * 10), 36);
  buf.writeUInt8(p.status === VehicleStatus.OFFLINE ? 0 : p.status & 0xff, 38);
  buf.writeUInt8(ONLINE, 39);
  buf.writeUInt8(fleetLen, 40);
  fleet.copy(buf, FIXED_BYTES, 0, fleetLen);
  order.copy(buf, FIXED_BYTES + fleetLen);
  return buf;
}

/** Decodes a stored state (throws RangeError on a record shorter than the fixed part). */
export function decodeState(buf: Uint8Array): StoredState {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < FIXED_BYTES) throw new RangeError(`state record of ${b.length} bytes is too short`);
  const fleetLen = b.readUInt8(40);
  return {
    rev: b.readUInt32LE(0),
    seq: b.readUInt32LE(4),
    recordedAtMs: b.readDoubleLE(8),
    lastSeenMs: b.readDoubleLE(16),
    lat: b.readInt32LE(24) / 1e7,
    lon: b.readInt32LE(28) / 1e7,
    speed: b.readUInt16LE(32) / 100,
    heading: b.readUInt16LE(34) / 100,
    accuracy: b.readUInt16LE(36) / 10,
    status: b.readUInt8(38) as VehicleStatus,
    online: (b.readUInt8(39) & ONLINE) !== 0,
    fleetId: b.toString("utf8", FIXED_BYTES, FIXED_BYTES + fleetLen),
    orderId: b.toString("utf8", FIXED_BYTES + fleetLen),
  };
}

/** The API's view of a stored state. */
export function toVehicleState(vehicleId: string, s: StoredState): VehicleState {
  return create(VehicleStateSchema, {
    position: create(PositionSchema, {
      vehicleId,
      seq: s.seq,
      recordedAt: timestampFromMs(s.recordedAtMs),
      lat: s.lat,
      lon: s.lon,
      speed: s.speed,
      heading: s.heading,
      accuracy: s.accuracy,
      orderId: s.orderId,
      status: s.online ? s.status : VehicleStatus.OFFLINE,
      fleetId: s.fleetId,
    }),
    status: s.online ? s.status : VehicleStatus.OFFLINE,
    orderId: s.orderId,
    lastSeen: timestampFromMs(s.lastSeenMs),
    online: s.online,
  });
}

/** What a live event says happened. */
export enum LiveKind {
  /** A new point. */
  Point = 1,
  /** A dispatcher changed status or order. */
  Status = 2,
  /** The staleness sweep took the vehicle offline. */
  Offline = 3,
}

/** One message on a live subject: the vehicle and its state after the change. */
export interface LiveEvent {
  kind: LiveKind;
  vehicleId: string;
  state: StoredState;
}

/** `[kind u8][idLen u16][id][state record]`. */
export function encodeLive(kind: LiveKind, vehicleId: string, record: Uint8Array): Uint8Array {
  const id = Buffer.from(vehicleId, "utf8");
  const out = Buffer.allocUnsafe(3 + id.length + record.length);
  out[0] = kind;
  out.writeUInt16LE(id.length, 1);
  id.copy(out, 3);
  out.set(record, 3 + id.length);
  return out;
}

export function decodeLive(data: Uint8Array): LiveEvent {
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const idLen = b.readUInt16LE(1);
  return {
    kind: b[0] as LiveKind,
    vehicleId: b.toString("utf8", 3, 3 + idLen),
    state: decodeState(b.subarray(3 + idLen)),
  };
}

const u32 = (b: Uint8Array, at: number) => (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
const i32 = (b: Uint8Array, at: number) => b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24);
const utf8 = new TextDecoder();
const f64 = new Float64Array(1);
const f64Bytes = new Uint8Array(f64.buffer);

/**
 * A live event as a watch first sees it: what deciding "in view?" needs, read straight from the
 * bytes, and the full state decoded only when asked (most events an area watch receives fall
 * outside it). One view is shared by every watch of the process that receives the message.
 *
 * Fields are read from the message's bytes as they are: wrapping them in a Buffer first
 * (`Buffer.from(data.buffer, …)`) made JavaScriptCore materialize the ArrayBuffer of every NATS
 * message, a visible share of a watch server's profile.
 */
export class LiveView {
  readonly rev: number;
  readonly lat: number;
  readonly lon: number;
  readonly status: VehicleStatus;
  readonly online: boolean;
  private decoded: StoredState | undefined;
  /** The API message of this state, made once for every watch that sends it (apiState). */
  api: VehicleState | undefined;
  /** Its protobuf bytes, written once for every watch that sends it (watch-encoder.ts). */
  wire: Uint8Array | undefined;

  /** `bytes[at…]` is a state record (throws RangeError when it is shorter than the fixed part). */
  constructor(
    readonly kind: LiveKind,
    readonly vehicleId: string,
    private readonly bytes: Uint8Array,
    private readonly at: number,
  ) {
    if (bytes.length - at < FIXED_BYTES) throw new RangeError(`state record of ${bytes.length - at} bytes is too short`);
    this.rev = u32(bytes, at);
    this.lat = i32(bytes, at + 24) / 1e7;
    this.lon = i32(bytes, at + 28) / 1e7;
    this.status = bytes[at + 38] as VehicleStatus;
    this.online = (bytes[at + 39]! & ONLINE) !== 0;
  }

  /** When the tracker that consumed the point took it (ms since the epoch), without decoding the rest. */
  get lastSeenMs(): number {
    for (let i = 0; i < 8; i++) f64Bytes[i] = this.bytes[this.at + 16 + i]!;
    return f64[0]!;
  }

  /** The full state, decoded on first use. */
  get state(): StoredState {
    return (this.decoded ??= decodeState(this.at === 0 ? this.bytes : this.bytes.subarray(this.at)));
  }
}

/** The API message of a view's state, built once per view. */
export function apiState(view: LiveView): VehicleState {
  return (view.api ??= toVehicleState(view.vehicleId, view.state));
}

/** Reads a live message's header fields; the state is decoded lazily. Throws RangeError on short input. */
export function peekLive(data: Uint8Array): LiveView {
  if (data.length < 3) throw new RangeError(`live message of ${data.length} bytes is too short`);
  const idLen = data[1]! | (data[2]! << 8);
  const end = 3 + idLen;
  if (end > data.length) throw new RangeError(`live message of ${data.length} bytes is shorter than its id`);
  let id = "";
  for (let i = 3; i < end; i++) {
    const c = data[i]!;
    if (c >= 0x80) {
      id = utf8.decode(data.subarray(3, end));
      break;
    }
    id += String.fromCharCode(c);
  }
  return new LiveView(data[0] as LiveKind, id, data, end);
}

/** A view of a state read from Redis (a snapshot). */
export function viewOfRecord(vehicleId: string, record: Buffer): LiveView {
  return new LiveView(LiveKind.Point, vehicleId, record, 0);
}
