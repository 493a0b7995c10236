/**
 * Vehicle load generator child of `bench platform`: holds its share of the vehicles, EACH ON ITS
 * OWN TCP CONNECTION, and sends their points at the rate the parent sets, over IPC (see
 * `VehicleCommand`).
 *
 * It must leave the cores to the platform it measures, so it is cheap on purpose:
 * - no HTTP/2 library: a minimal client over `node:net` writes the preface, an empty SETTINGS and
 *   one HEADERS block per vehicle, encoded once (test/raw-h2.ts's HPACK literals), then one DATA
 *   frame per point (a gRPC-framed `SyncRequest`, written by hand into one shared buffer), and
 *   reads only what it needs: DATA (the acks), SETTINGS, PING, WINDOW_UPDATE, trailers. node:http2
 *   keeps a session object, stream objects and their event machinery per vehicle: at 10,000
 *   vehicles per process that is the difference between a load generator and a second platform;
 * - one timer per process, not per vehicle; vehicle state in typed arrays;
 * - the routes are the simulator's (sim/route.ts), computed once at start for a pool of routes
 *   that vehicles share with their own offset (a 10 x 10 grid of cities, so that an area watch
 *   sees a neighbourhood, not a tenth of the fleet).
 *
 * In "mqtt" mode the same vehicles speak MQTT 3.1.1 to Mosquitto instead (CONNECT, PUBLISH QoS 1
 * of the same Position bytes, PUBACK), for the peer measurement on the same connections.
 *
 * Ack latency is per point: send (the write) to the ack whose durable_seq covers it (MQTT: its PUBACK).
 */
import net from "node:net";
import { fromBinary } from "@bufbuild/protobuf";
import { RejectReason, SyncResponseSchema } from "../gen/fleet/v1/ingest_pb";
import { VehicleStatus } from "../gen/fleet/v1/position_pb";
import { mintVehicleToken, type TokenKeys } from "../lib/auth";
import { varintSize, writeVarint } from "../lib/wire";
import { createCity, createRng, createVehicleModel } from "../sim/route";
import { encodeHeaders, FLAG, FRAME } from "../test/raw-h2";
import { createHistogram, type Histogram, type HistogramJSON } from "./histogram";
import { syncAckDurableSeq } from "./point-codec";

export interface VehicleCounters {
  /** Points written. */
  sent: number;
  /** Good points covered by an ack (MQTT: PUBACKs). */
  acked: number;
  /** Points the gateway refused (the deliberately bad fixes, and anything else). */
  rejected: number;
  /** Refusals that were not one of the bad fixes (must stay 0). */
  unexpectedRejections: number;
  /** Points due while their vehicle had no open stream (reconnecting, failed) or no flow-control window. */
  skipped: number;
  /** Streams that ended with an error (trailers, reset, GOAWAY, socket closed). */
  streamErrors: number;
  /** Reconnects done (planned, the share the parent set). */
  reconnects: number;
  /** Vehicles with an open stream now. */
  open: number;
}

export type VehicleCommand =
  | {
      type: "init";
      mode: "h2" | "mqtt";
      /** h2: one gateway port (several processes behind it); mqtt: the brokers, vehicle i on broker i % n. */
      targets: { host: string; port: number }[];
      /** Loopback source address of this process's connections (ephemeral ports are per source address). */
      localAddress: string;
      keys: TokenKeys;
      prefix: string;
      first: number;
      count: number;
      /** Vehicles in all (for the city grid and the order share). */
      total: number;
      /** Share of points that are deliberately bad (NaN latitude); h2 only. */
      badShare: number;
      /** Chance per point that its vehicle drops its connection after the ack and reconnects; h2 only. */
      reconnectShare: number;
      /** Every `orderEvery`-th vehicle serves an order (`o-<index>` in fleet `fleetOf(index)`). */
      orderEvery: number;
    }
  | { type: "open"; concurrency: number; timeoutMs: number }
  | { type: "rate"; rate: number }
  | { type: "record" }
  | { type: "report" }
  | { type: "settle"; timeoutMs: number }
  | { type: "tally" }
  | { type: "close" };

/** One vehicle's outcome: what it was told is durable, and which of its seqs were bad fixes. */
export interface VehicleTally {
  id: string;
  /** Highest durable_seq acked. */
  durable: number;
  /** Good points up to `durable`: the rows PostgreSQL must hold for it. */
  expected: number;
  /** Highest good seq at or below durable: the point the tracker must hold (0: none). */
  newest: number;
}

export type VehicleEvent =
  | { type: "hello" }
  | { type: "ready"; ms: number }
  | { type: "opened"; open: number; failed: number; ms: number; lastError: string }
  | { type: "progress"; counters: VehicleCounters }
  | {
      type: "report";
      histogram: HistogramJSON;
      counters: VehicleCounters;
      /** CPU µs (user + system) this process used in the window, and the window's length. */
      cpuMicros: number;
      /** Of it, in the kernel: on loopback the writer's send also runs the receiver's TCP path. */
      systemMicros: number;
      seconds: number;
      /** Good points sent in the window, acked in it. */
      sentInWindow: number;
      ackedInWindow: number;
      lastError: string;
    }
  | {
      type: "settled";
      behind: number;
      /** Vehicles without an open stream now (a failed connect or reconnect), and with points sent past their durable seq. */
      notOpen: number;
      unacked: number;
      counters: VehicleCounters;
      lastError: string;
    }
  | { type: "tally"; vehicles: VehicleTally[] }
  | { type: "closed" }
  | { type: "failed"; message: string };

/** Fleet of vehicle `index`: one per city of the grid. */
export const fleetOf = (index: number) => `f${index % CITIES}`;
/** Cities in the grid (10 x 10) that vehicles are spread over. */
export const CITIES = 100;
/** Where city `c` of the grid is centred (about 5.5 km apart: their 4 x 4 km grids do not overlap). */
export function cityCenter(c: number): { lat: number; lon: number } {
  return { lat: 52.0 + Math.floor(c / 10) * 0.05, lon: 13.0 + (c % 10) * 0.08 };
}
/** Routes computed per city and process; vehicles take one each (a vehicle's city is index % CITIES). */
const ROUTES_PER_CITY = 8;
/** Fixes of one route, one per point; a vehicle walks it forth and back (no jump at the ends). */
const ROUTE_FIXES = 120;
/** In-flight send times kept per vehicle. */
const RING = 8;
const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

interface Route {
  lat: Float64Array;
  lon: Float64Array;
  speed: Float32Array;
  heading: Float32Array;
  accuracy: Float32Array;
  available: Uint8Array;
}

/** One vehicle's connection: the socket and what the frame reader keeps between chunks. */
interface Conn {
  sock: net.Socket | null;
  /** 0 none, 1 connecting (waiting for the resume ack), 2 live. */
  state: number;
  pending: Buffer | null;
  /** Bytes of a gRPC message split over DATA frames. */
  grpc: Buffer | null;
  recvSinceUpdate: number;
  connWindow: number;
  streamWindow: number;
  initialWindow: number;
  closing: boolean;
}

const send = (e: VehicleEvent) => process.send!(e);

let mode: "h2" | "mqtt" = "h2";
let targets: { host: string; port: number }[] = [];
let localAddress = "127.0.0.1";
let badShare = 0;
let reconnectShare = 0;
let n = 0;
let ids: string[] = [];
const idBytes: Buffer[] = [];
const orderBytes: (Buffer | null)[] = [];
let headerFrames: Buffer[] = [];
let mqttConnect: Buffer[] = [];
let mqttTopic: Buffer[] = [];
let routes: Route[] = [];
let routeOf: Uint16Array;
let step: Uint32Array;
let seq: Uint32Array;
let durable: Uint32Array;
let lastGood: Uint32Array;
let lastMs: Float64Array;
let sentAt: Float64Array;
let reconnectAfterAck: Uint8Array;
const badSeqs = new Map<number, number[]>();
let conns: Conn[] = [];

const counters: VehicleCounters = {
  sent: 0,
  acked: 0,
  rejected: 0,
  unexpectedRejections: 0,
  skipped: 0,
  streamErrors: 0,
  reconnects: 0,
  open: 0,
};
let lastError = "";
let histogram: Histogram = createHistogram();
let windowStart = performance.now();
let cpuStart = process.cpuUsage();
let sent0 = 0;
let acked0 = 0;

/** A deterministic hash of (i, salt) in [0, 1): the same bad fixes and reconnects in every run. */
function spread(i: number, salt: number): number {
  let h = Math.imul(i ^ Math.imul(salt, 0x9e3779b9), 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 4294967296;
}

/** The simulator's driving for ROUTES_PER_CITY routes of every city, ROUTE_FIXES fixes each, `intervalS` apart. */
function buildRoutes(seed: number, intervalS: number): Route[] {
  const out: Route[] = [];
  for (let c = 0; c < CITIES; c++) {
    const city = createCity({ center: cityCenter(c) });
    for (let r = 0; r < ROUTES_PER_CITY; r++) {
      const model = createVehicleModel(city, `route-${c}-${r}`, createRng(seed * 7919 + c * 101 + r), { badFixRate: 0 });
      const route: Route = {
        lat: new Float64Array(ROUTE_FIXES),
        lon: new Float64Array(ROUTE_FIXES),
        speed: new Float32Array(ROUTE_FIXES),
        heading: new Float32Array(ROUTE_FIXES),
        accuracy: new Float32Array(ROUTE_FIXES),
        available: new Uint8Array(ROUTE_FIXES),
      };
      for (let k = 0; k < ROUTE_FIXES; k++) {
        model.step(intervalS, (k + 1) * intervalS);
        const p = model.fix(0).position;
        route.lat[k] = p.lat ?? 0;
        route.lon[k] = p.lon ?? 0;
        route.speed[k] = p.speed ?? 0;
        route.heading[k] = p.heading ?? 0;
        route.accuracy[k] = p.accuracy ?? 5;
        route.available[k] = p.status === VehicleStatus.AVAILABLE ? 1 : 0;
      }
      out.push(route);
    }
  }
  return out;
}

function mqttRemainingLength(len: number): number[] {
  const out: number[] = [];
  do {
    let b = len % 128;
    len = Math.floor(len / 128);
    if (len > 0) b |= 0x80;
    out.push(b);
  } while (len > 0);
  return out;
}

async function init(cmd: Extract<VehicleCommand, { type: "init" }>): Promise<void> {
  mode = cmd.mode;
  targets = cmd.targets;
  localAddress = cmd.localAddress;
  badShare = cmd.mode === "h2" ? cmd.badShare : 0;
  reconnectShare = cmd.mode === "h2" ? cmd.reconnectShare : 0;
  n = cmd.count;
  routes = buildRoutes(1, 6);
  ids = [];
  routeOf = new Uint16Array(n);
  step = new Uint32Array(n);
  seq = new Uint32Array(n);
  durable = new Uint32Array(n);
  lastGood = new Uint32Array(n);
  lastMs = new Float64Array(n);
  sentAt = new Float64Array(n * RING);
  reconnectAfterAck = new Uint8Array(n);
  const tokens: Promise<string>[] = [];
  for (let i = 0; i < n; i++) {
    const index = cmd.first + i;
    const id = `${cmd.prefix}${index}`;
    ids.push(id);
    idBytes.push(Buffer.from(id));
    orderBytes.push(index % cmd.orderEvery === 0 ? Buffer.from(`o-${index}`) : null);
    // The vehicle's city is index % CITIES (its fleet too); its route one of that city's, its place on it its own.
    routeOf[i] = (index % CITIES) * ROUTES_PER_CITY + (Math.floor(index / CITIES) % ROUTES_PER_CITY);
    step[i] = Math.floor(spread(index, 11) * 2 * ROUTE_FIXES);
    if (mode === "h2") tokens.push(mintVehicleToken(cmd.keys, id, { fleetId: fleetOf(index), ttlSeconds: 86400 }));
  }
  if (mode === "h2") {
    const minted = await Promise.all(tokens);
    const authority = `${targets[0]!.host}:${targets[0]!.port}`;
    headerFrames = minted.map((token) => {
      const block = encodeHeaders([
        [":method", "POST"],
        [":scheme", "http"],
        [":authority", authority],
        [":path", "/fleet.v1.IngestService/Sync"],
        ["content-type", "application/grpc+proto"],
        ["te", "trailers"],
        ["authorization", `Bearer ${token}`],
      ]);
      return Buffer.concat([frameHeader(block.length, FRAME.HEADERS, FLAG.END_HEADERS, 1), block]);
    });
  } else {
    mqttConnect = ids.map((id) => {
      const cid = Buffer.from(id);
      // MQTT 3.1.1 CONNECT: clean session, no keep-alive (the broker never pings a vehicle out).
      const variable = Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0x02, 0, 0]);
      const rest = 10 + 2 + cid.length;
      return Buffer.concat([
        Buffer.from([0x10, ...mqttRemainingLength(rest)]),
        variable,
        Buffer.from([cid.length >> 8, cid.length & 0xff]),
        cid,
      ]);
    });
    mqttTopic = ids.map((_, i) => {
      const t = Buffer.from(`fleet/pos/${(cmd.first + i) % 16}`);
      return Buffer.concat([Buffer.from([t.length >> 8, t.length & 0xff]), t]);
    });
  }
  conns = ids.map(() => ({
    sock: null,
    state: 0,
    pending: null,
    grpc: null,
    recvSinceUpdate: 0,
    connWindow: 65535,
    streamWindow: 65535,
    initialWindow: 65535,
    closing: false,
  }));
}

function frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
  const b = Buffer.allocUnsafe(9);
  b[0] = (length >>> 16) & 0xff;
  b[1] = (length >>> 8) & 0xff;
  b[2] = length & 0xff;
  b[3] = type;
  b[4] = flags;
  b.writeUInt32BE(streamId, 5);
  return b;
}

const SETTINGS_ACK = frameHeader(0, FRAME.SETTINGS, FLAG.ACK, 0);
/** The client's SETTINGS: push off; the rest default. */
const CLIENT_SETTINGS = Buffer.concat([frameHeader(6, FRAME.SETTINGS, 0, 0), Buffer.from([0, 2, 0, 0, 0, 0])]);

function connect(i: number): void {
  const c = conns[i]!;
  const target = targets[mode === "h2" ? 0 : i % targets.length]!;
  c.state = 1;
  c.pending = null;
  c.grpc = null;
  c.recvSinceUpdate = 0;
  c.connWindow = 65535;
  c.streamWindow = 65535;
  c.initialWindow = 65535;
  c.closing = false;
  const sock = net.connect({ host: target.host, port: target.port, localAddress });
  c.sock = sock;
  sock.setNoDelay(true);
  sock.on("connect", () => {
    if (mode === "h2") sock.write(Buffer.concat([PREFACE, CLIENT_SETTINGS, headerFrames[i]!]));
    else sock.write(mqttConnect[i]!);
  });
  sock.on("data", (chunk: Buffer) => (mode === "h2" ? onH2Data(i, c, chunk) : onMqttData(i, c, chunk)));
  sock.on("error", (err) => {
    lastError = `${ids[i]}: ${err.message}`;
  });
  sock.on("close", () => {
    if (c.sock !== sock) return;
    if (c.state === 2) counters.open--;
    if (!c.closing) counters.streamErrors++;
    c.state = 0;
    c.sock = null;
  });
}

function fail(i: number, c: Conn, why: string): void {
  lastError = `${ids[i]}: ${why}`;
  c.sock?.destroy();
}

function becameLive(c: Conn): void {
  if (c.state !== 2) {
    c.state = 2;
    counters.open++;
  }
}

function onH2Data(i: number, c: Conn, chunk: Buffer): void {
  const buf = c.pending ? Buffer.concat([c.pending, chunk]) : chunk;
  c.pending = null;
  let off = 0;
  while (buf.length - off >= 9) {
    const len = (buf[off]! << 16) | (buf[off + 1]! << 8) | buf[off + 2]!;
    if (buf.length - off < 9 + len) break;
    const type = buf[off + 3]!;
    const flags = buf[off + 4]!;
    const stream = buf.readUInt32BE(off + 5) & 0x7fffffff;
    const p = off + 9;
    off = p + len;
    switch (type) {
      case FRAME.DATA: {
        let start = p;
        let end = p + len;
        if (flags & 0x8) {
          start++;
          end -= buf[p]!;
        }
        onGrpcBytes(i, c, buf.subarray(start, end));
        c.recvSinceUpdate += len;
        // Give the credit back in large steps: acks are small, one WINDOW_UPDATE per 16 KiB read.
        if (c.recvSinceUpdate >= 16384 && c.sock) {
          const inc = Buffer.allocUnsafe(4);
          inc.writeUInt32BE(c.recvSinceUpdate);
          c.sock.write(Buffer.concat([frameHeader(4, FRAME.WINDOW_UPDATE, 0, 0), inc, frameHeader(4, FRAME.WINDOW_UPDATE, 0, 1), inc]));
          c.recvSinceUpdate = 0;
        }
        if (flags & FLAG.END_STREAM) fail(i, c, "stream ended by the gateway");
        break;
      }
      case FRAME.HEADERS:
        // Response headers carry nothing the vehicle needs; trailers (END_STREAM) end the call.
        if (flags & FLAG.END_STREAM && !c.closing) fail(i, c, "the Sync call ended (trailers)");
        break;
      case FRAME.SETTINGS:
        if (flags & FLAG.ACK) break;
        for (let k = p; k + 6 <= p + len; k += 6) {
          if (buf.readUInt16BE(k) === 4) {
            const v = buf.readUInt32BE(k + 2);
            c.streamWindow += v - c.initialWindow;
            c.initialWindow = v;
          }
        }
        c.sock?.write(SETTINGS_ACK);
        break;
      case FRAME.PING:
        if (!(flags & FLAG.ACK)) c.sock?.write(Buffer.concat([frameHeader(8, FRAME.PING, FLAG.ACK, 0), buf.subarray(p, p + 8)]));
        break;
      case FRAME.WINDOW_UPDATE: {
        const inc = buf.readUInt32BE(p) & 0x7fffffff;
        if (stream === 0) c.connWindow += inc;
        else c.streamWindow += inc;
        break;
      }
      case FRAME.RST_STREAM:
        fail(i, c, `stream reset (code ${buf.readUInt32BE(p)})`);
        break;
      case FRAME.GOAWAY:
        if (!c.closing) fail(i, c, `GOAWAY (code ${buf.readUInt32BE(p + 4)})`);
        break;
    }
  }
  if (off < buf.length) c.pending = Buffer.from(buf.subarray(off));
}

function onGrpcBytes(i: number, c: Conn, data: Buffer): void {
  const buf = c.grpc ? Buffer.concat([c.grpc, data]) : data;
  c.grpc = null;
  let off = 0;
  while (buf.length - off >= 5) {
    const len = buf.readUInt32BE(off + 1);
    if (buf.length - off - 5 < len) break;
    const start = off + 5;
    const end = start + len;
    off = end;
    const d = syncAckDurableSeq(buf, start, end);
    if (d !== undefined) onAck(i, c, d, null);
    else {
      const ack = fromBinary(SyncResponseSchema, buf.subarray(start, end)).ack;
      onAck(i, c, ack?.durableSeq ?? 0, ack?.rejected ?? []);
    }
  }
  if (off < buf.length) c.grpc = Buffer.from(buf.subarray(off));
}

function onAck(i: number, c: Conn, d: number, rejected: { seq: number; reason: RejectReason }[] | null): void {
  becameLive(c);
  if (rejected) {
    for (const r of rejected) {
      counters.rejected++;
      const bad = badSeqs.get(i);
      if (r.reason !== RejectReason.INVALID_COORDINATES || !bad?.includes(r.seq)) {
        counters.unexpectedRejections++;
        lastError = `${ids[i]}: seq ${r.seq} refused (${RejectReason[r.reason]})`;
      }
    }
  }
  const before = durable[i]!;
  if (d > before) {
    const at = performance.now();
    const bad = badSeqs.get(i);
    for (let s = before + 1; s <= d; s++) {
      if (bad?.includes(s)) continue;
      const t = sentAt[i * RING + (s % RING)]!;
      if (t > 0) {
        histogram.record(at - t);
        sentAt[i * RING + (s % RING)] = 0;
      }
      counters.acked++;
    }
    durable[i] = d;
  }
  if (reconnectAfterAck[i] && durable[i]! >= seq[i]!) {
    // A planned drop: nothing in flight, so the new stream's resume point is this vehicle's seq.
    reconnectAfterAck[i] = 0;
    counters.reconnects++;
    c.closing = true;
    c.sock?.destroy();
    if (c.state === 2) counters.open--;
    c.state = 0;
    c.sock = null;
    connect(i);
  }
}

function onMqttData(i: number, c: Conn, chunk: Buffer): void {
  const buf = c.pending ? Buffer.concat([c.pending, chunk]) : chunk;
  c.pending = null;
  let off = 0;
  // Only CONNACK (0x20) and PUBACK (0x40) come back, both 4 bytes.
  while (buf.length - off >= 4) {
    const type = buf[off]! >> 4;
    if (type === 2) {
      if (buf[off + 3] !== 0) fail(i, c, `CONNACK refused (${buf[off + 3]})`);
      else becameLive(c);
    } else if (type === 4) {
      const id = buf.readUInt16BE(off + 2);
      const t = sentAt[i * RING + (id % RING)]!;
      if (t > 0) {
        histogram.record(performance.now() - t);
        sentAt[i * RING + (id % RING)] = 0;
      }
      counters.acked++;
      durable[i] = Math.max(durable[i]!, id);
    }
    off += 4;
  }
  if (off < buf.length) c.pending = Buffer.from(buf.subarray(off));
}

async function openAll(concurrency: number, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  let next = 0;
  while (next < n && performance.now() < deadline) {
    let connecting = 0;
    for (const c of conns) if (c.state === 1) connecting++;
    while (connecting < concurrency && next < n) {
      connect(next++);
      connecting++;
    }
    await Bun.sleep(5);
  }
  while (conns.some((c) => c.state === 1) && performance.now() < deadline) await Bun.sleep(20);
}

let writeBuf = Buffer.allocUnsafe(512);

/** Writes vehicle i's next point as one DATA frame (h2) or PUBLISH (mqtt). */
function sendPoint(i: number, wall: number, at: number): void {
  const c = conns[i]!;
  if (c.state !== 2 || !c.sock) {
    counters.skipped++;
    return;
  }
  const s = seq[i]! + 1;
  // RING points in flight: its send times would be overwritten (and an overloaded platform would
  // get an unbounded pile); the point is skipped and counted instead.
  if (s - durable[i]! >= RING) {
    counters.skipped++;
    return;
  }
  const index = i;
  const bad = badShare > 0 && spread(index * 65537 + s, 5) < badShare;
  // Walk the route forth and back: step k of 2*ROUTE_FIXES.
  const k2 = step[i]! % (2 * ROUTE_FIXES);
  step[i] = k2 + 1;
  const k = k2 < ROUTE_FIXES ? k2 : 2 * ROUTE_FIXES - 1 - k2;
  const r = routes[routeOf[i]!]!;
  const ms = Math.max(wall, lastMs[i]! + 1);
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms - seconds * 1000) * 1_000_000;
  const id = idBytes[i]!;
  const order = orderBytes[i];
  const status = order ? VehicleStatus.ON_DELIVERY : r.available[k] ? VehicleStatus.AVAILABLE : VehicleStatus.ACTIVE;
  const tsLen = 1 + varintSize(seconds) + (nanos > 0 ? 1 + varintSize(nanos) : 0);
  const posLen = 2 + id.length + 1 + varintSize(s) + 2 + tsLen + 9 + 9 + 5 + 5 + 5 + (order ? 2 + order.length : 0) + 2;
  // h2: 9-byte frame header, 5-byte gRPC prefix, SyncRequest.position tag and length; mqtt: fixed header, topic, packet id.
  const head = mode === "h2" ? 9 + 5 + 1 + varintSize(posLen) : 1 + 4 + mqttTopic[i]!.length + 2;
  if (writeBuf.length < head + posLen) writeBuf = Buffer.allocUnsafe((head + posLen) * 2);
  const b = writeBuf;
  let o: number;
  if (mode === "h2") {
    const dataLen = 5 + 1 + varintSize(posLen) + posLen;
    if (c.connWindow < dataLen || c.streamWindow < dataLen) {
      counters.skipped++;
      return;
    }
    c.connWindow -= dataLen;
    c.streamWindow -= dataLen;
    b[0] = (dataLen >>> 16) & 0xff;
    b[1] = (dataLen >>> 8) & 0xff;
    b[2] = dataLen & 0xff;
    b[3] = FRAME.DATA;
    b[4] = 0;
    b.writeUInt32BE(1, 5);
    const msgLen = 1 + varintSize(posLen) + posLen;
    b[9] = 0;
    b.writeUInt32BE(msgLen, 10);
    b[14] = 0x0a;
    o = writeVarint(b, 15, posLen);
  } else {
    const topic = mqttTopic[i]!;
    const rest = topic.length + 2 + posLen;
    b[0] = 0x32; // PUBLISH, QoS 1
    o = 1;
    for (const x of mqttRemainingLength(rest)) b[o++] = x;
    topic.copy(b, o);
    o += topic.length;
    // Packet id: the seq (never 0 in 16 bits for the run's lengths; wraps past 65,535).
    const pid = s % 65536 || 1;
    b[o++] = pid >> 8;
    b[o++] = pid & 0xff;
  }
  b[o++] = 0x0a;
  b[o++] = id.length;
  id.copy(b, o);
  o += id.length;
  b[o++] = 0x10;
  o = writeVarint(b, o, s);
  b[o++] = 0x1a;
  b[o++] = tsLen;
  b[o++] = 0x08;
  o = writeVarint(b, o, seconds);
  if (nanos > 0) {
    b[o++] = 0x10;
    o = writeVarint(b, o, nanos);
  }
  b[o++] = 0x21;
  b.writeDoubleLE(bad ? Number.NaN : r.lat[k]!, o);
  o += 8;
  b[o++] = 0x29;
  b.writeDoubleLE(r.lon[k]!, o);
  o += 8;
  b[o++] = 0x35;
  b.writeFloatLE(r.speed[k]!, o);
  o += 4;
  b[o++] = 0x3d;
  b.writeFloatLE(r.heading[k]!, o);
  o += 4;
  b[o++] = 0x45;
  b.writeFloatLE(r.accuracy[k]!, o);
  o += 4;
  if (order) {
    b[o++] = 0x4a;
    b[o++] = order.length;
    order.copy(b, o);
    o += order.length;
  }
  b[o++] = 0x50;
  b[o++] = status;
  // Copy: the socket may hold the bytes until it is flushed.
  c.sock.write(Buffer.from(b.subarray(0, o)));
  seq[i] = s;
  lastMs[i] = ms;
  counters.sent++;
  if (bad) {
    const list = badSeqs.get(i);
    if (list) list.push(s);
    else badSeqs.set(i, [s]);
  } else {
    lastGood[i] = s;
    sentAt[i * RING + (s % RING)] = at;
  }
  if (reconnectShare > 0 && spread(index * 131 + s, 9) < reconnectShare) reconnectAfterAck[i] = 1;
}

let rate = 0;
let rateStart = 0;
let offered = 0;
let cursor = 0;
let timer: ReturnType<typeof setInterval> | null = null;

/** The one timer: every 2 ms, the points due since the rate was set, to the next vehicles in turn. */
function tick(): void {
  if (rate <= 0 || n === 0) return;
  const t = performance.now();
  const due = Math.floor(((t - rateStart) / 1000) * rate) - offered;
  if (due <= 0) return;
  const wall = Date.now();
  // After a long stall, at most one second's worth at once.
  const now = Math.min(due, Math.ceil(rate));
  for (let k = 0; k < now; k++) {
    sendPoint(cursor, wall, t);
    cursor = (cursor + 1) % n;
  }
  offered += due;
}

function report(): Extract<VehicleEvent, { type: "report" }> {
  const cpu = process.cpuUsage(cpuStart);
  const e: Extract<VehicleEvent, { type: "report" }> = {
    type: "report",
    histogram: histogram.toJSON(),
    counters: { ...counters },
    cpuMicros: cpu.user + cpu.system,
    systemMicros: cpu.system,
    seconds: (performance.now() - windowStart) / 1000,
    sentInWindow: counters.sent - sent0,
    ackedInWindow: counters.acked - acked0,
    lastError,
  };
  return e;
}

function startWindow(): void {
  histogram = createHistogram();
  windowStart = performance.now();
  cpuStart = process.cpuUsage();
  sent0 = counters.sent;
  acked0 = counters.acked;
}

function tallies(): VehicleTally[] {
  const out: VehicleTally[] = [];
  for (let i = 0; i < n; i++) {
    const d = durable[i]!;
    const bad = badSeqs.get(i) ?? [];
    const badBelow = bad.filter((s) => s <= d).length;
    let newest = 0;
    for (let s = d; s >= 1; s--)
      if (!bad.includes(s)) {
        newest = s;
        break;
      }
    out.push({ id: ids[i]!, durable: d, expected: d - badBelow, newest });
  }
  return out;
}

// The child's side: bench/platform.ts imports this module for its types and the city grid.
if (import.meta.main) {
  process.on("message", async (raw: unknown) => {
    const cmd = raw as VehicleCommand;
    try {
      switch (cmd.type) {
        case "init": {
          const t = performance.now();
          await init(cmd);
          timer = setInterval(tick, 2);
          setInterval(() => send({ type: "progress", counters: { ...counters } }), 2000).unref();
          send({ type: "ready", ms: performance.now() - t });
          break;
        }
        case "open": {
          const t = performance.now();
          await openAll(cmd.concurrency, cmd.timeoutMs);
          send({ type: "opened", open: counters.open, failed: n - counters.open, ms: performance.now() - t, lastError });
          break;
        }
        case "rate":
          rate = cmd.rate;
          rateStart = performance.now();
          offered = 0;
          break;
        case "record":
          startWindow();
          break;
        case "report":
          send(report());
          break;
        case "settle": {
          // Every good point sent acked (or the timeout); vehicles without a stream are not waited for.
          const deadline = performance.now() + cmd.timeoutMs;
          const behind = () => {
            let b = 0;
            for (let i = 0; i < n; i++) if (conns[i]!.state === 2 && durable[i]! < lastGood[i]!) b++;
            return b;
          };
          while (behind() > 0 && performance.now() < deadline) await Bun.sleep(50);
          let notOpen = 0;
          let unacked = 0;
          for (let i = 0; i < n; i++) {
            if (conns[i]!.state !== 2) notOpen++;
            if (durable[i]! < lastGood[i]!) unacked++;
          }
          send({ type: "settled", behind: behind(), notOpen, unacked, counters: { ...counters }, lastError });
          break;
        }
        case "tally":
          send({ type: "tally", vehicles: tallies() });
          break;
        case "close": {
          rate = 0;
          if (timer) clearInterval(timer);
          for (const c of conns) {
            c.closing = true;
            c.sock?.destroy();
          }
          send({ type: "closed" });
          setTimeout(() => process.exit(0), 100);
          break;
        }
      }
    } catch (err) {
      send({ type: "failed", message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    }
  });
  send({ type: "hello" });
}
