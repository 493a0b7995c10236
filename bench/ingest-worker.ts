/**
 * Load generator child of `bench ingest`: holds its share of the vehicle streams on a few
 * HTTP/2 connections and drives them as the parent says over IPC (see `WorkerCommand`).
 *
 * Cheap on purpose, so that the gateway, not the generator, is what gets measured: raw
 * `node:http2` with hand-framed gRPC messages (one `SyncRequest` per point, 5-byte prefix +
 * protobuf written by `point-codec.ts`), one session per connection, acks read by hand
 * (`syncAckDurableSeq`; protobuf-es for those that refuse points).
 */
import http2 from "node:http2";
import { fromBinary } from "@bufbuild/protobuf";
import { SyncResponseSchema } from "../gen/fleet/v1/ingest_pb";
import { mintVehicleToken, type TokenKeys } from "../lib/auth";
import { maxSyncFrameSize, simPosition, syncAckDurableSeq, vehicleTemplate, writeSyncFrame, type VehicleTemplate } from "./point-codec";
import { createHistogram, type Histogram } from "./histogram";
import type { TimerGaps, WorkerCommand, WorkerEvent, WorkerCounters } from "./ingest-protocol";

/** Points a stream may have sent and not yet seen acked; also the size of the send-time ring. */
const RING = 256;

interface VehicleStream {
  readonly index: number;
  readonly vehicleId: string;
  readonly t: VehicleTemplate;
  readonly token: string;
  session: number;
  stream: http2.ClientHttp2Stream | null;
  /** Last seq sent. */
  seq: number;
  /** recorded_at (ms) of the last point sent: the gateway takes one fix per vehicle and millisecond. */
  lastMs: number;
  /** Highest durable seq acked. */
  durable: number;
  open: boolean;
  closed: boolean;
  /** performance.now() of each in-flight seq, at seq % RING (steady phase only). */
  sent: Float64Array | null;
  pending: Uint8Array;
  pendingLength: number;
}

const send = (event: WorkerEvent) => process.send!(event);
const NONE: { reason: number }[] = [];

const counters: WorkerCounters = { sent: 0, acked: 0, rejected: 0, streamErrors: 0, open: 0 };
const rejectReasons = new Map<number, number>();
let lastError = "";
const sessions: http2.ClientHttp2Session[] = [];
let streams: VehicleStream[] = [];
let mode: "idle" | "blast" | "steady" = "idle";
let blastWindow = 8;
let histogram: Histogram | null = null;
const onOpened: (() => void) | null = null;
let frameBuf = new Uint8Array(64 * 1024);

function now(): number {
  return performance.now();
}

/** recorded_at of new points: wall time, cached per millisecond tick by callers that send many. */
function wallMs(): number {
  return Date.now();
}

function writePoints(v: VehicleStream, n: number, tMs: number, at: number): void {
  if (!v.stream || v.closed || n <= 0) return;
  const need = n * maxSyncFrameSize(v.t);
  if (frameBuf.length < need) frameBuf = new Uint8Array(need * 2);
  let off = 0;
  for (let i = 0; i < n; i++) {
    v.seq++;
    // Several points of one vehicle in one tick get consecutive milliseconds, as a receiver's fixes would.
    v.lastMs = Math.max(tMs, v.lastMs + 1);
    off = writeSyncFrame(frameBuf, off, v.t, v.seq, v.lastMs);
    if (v.sent) v.sent[v.seq % RING] = at;
  }
  // Copy: the stream may keep the buffer until it is flushed.
  v.stream.write(Buffer.from(frameBuf.subarray(0, off)));
  counters.sent += n;
}

function onAck(v: VehicleStream, durable: number, rejected: { reason: number }[]): void {
  if (!v.open) {
    v.open = true;
    counters.open++;
    if (counters.open === streams.length) onOpened?.();
  }
  for (const r of rejected) {
    counters.rejected++;
    rejectReasons.set(r.reason, (rejectReasons.get(r.reason) ?? 0) + 1);
  }
  if (durable > v.durable) {
    const at = now();
    if (v.sent && histogram) {
      for (let s = v.durable + 1; s <= durable; s++) histogram.record(at - v.sent[s % RING]!);
    }
    counters.acked += durable - v.durable;
    v.durable = durable;
  }
  if (mode === "blast") {
    const inFlight = v.seq - v.durable;
    if (inFlight < blastWindow) writePoints(v, blastWindow - inFlight, wallMs(), 0);
  }
}

function onData(v: VehicleStream, chunk: Buffer): void {
  let buf: Uint8Array = chunk;
  if (v.pendingLength > 0) {
    const joined = new Uint8Array(v.pendingLength + chunk.length);
    joined.set(v.pending.subarray(0, v.pendingLength));
    joined.set(chunk, v.pendingLength);
    buf = joined;
    v.pendingLength = 0;
  }
  let off = 0;
  while (buf.length - off >= 5) {
    const len = ((buf[off + 1]! << 24) >>> 0) + (buf[off + 2]! << 16) + (buf[off + 3]! << 8) + buf[off + 4]!;
    if (buf.length - off < 5 + len) break;
    const durable = syncAckDurableSeq(buf, off + 5, off + 5 + len);
    if (durable !== undefined) onAck(v, durable, NONE);
    else {
      const ack = fromBinary(SyncResponseSchema, buf.subarray(off + 5, off + 5 + len)).ack;
      onAck(v, ack?.durableSeq ?? 0, ack?.rejected ?? []);
    }
    off += 5 + len;
  }
  if (off < buf.length) {
    const rest = buf.subarray(off);
    if (v.pending.length < rest.length) v.pending = new Uint8Array(rest.length * 2);
    v.pending.set(rest);
    v.pendingLength = rest.length;
  }
}

function openStream(v: VehicleStream): void {
  const session = sessions[v.session]!;
  const stream = session.request({
    ":method": "POST",
    ":path": "/fleet.v1.IngestService/Sync",
    "content-type": "application/grpc+proto",
    te: "trailers",
    authorization: `Bearer ${v.token}`,
  });
  v.stream = stream;
  stream.on("response", (headers) => {
    const status = headers["grpc-status"];
    if (status !== undefined && status !== "0") failStream(v, `grpc-status ${status} ${headers["grpc-message"] ?? ""}`);
  });
  stream.on("data", (chunk: Buffer) => onData(v, chunk));
  stream.on("trailers", (trailers) => {
    const status = trailers["grpc-status"];
    if (status !== undefined && status !== "0" && !v.closed)
      failStream(v, `grpc-status ${status} ${decodeURIComponent(String(trailers["grpc-message"] ?? ""))}`);
  });
  stream.on("error", (err) => failStream(v, err.message));
  stream.on("close", () => {
    if (!v.closed) {
      v.closed = true;
      if (v.open) counters.open--;
    }
  });
}

function failStream(v: VehicleStream, message: string): void {
  if (v.closed) return;
  counters.streamErrors++;
  lastError = message;
  v.closed = true;
  if (v.open) counters.open--;
  v.stream?.close();
}

async function init(cmd: Extract<WorkerCommand, { type: "init" }>): Promise<void> {
  const keys: TokenKeys = cmd.keys;
  for (let c = 0; c < cmd.connections; c++) {
    const session = http2.connect(cmd.url);
    session.on("error", (err) => {
      lastError = `session: ${err.message}`;
    });
    sessions.push(session);
  }
  await Promise.all(
    sessions.map(
      (s) =>
        new Promise<void>((resolve, reject) => {
          s.once("connect", () => resolve());
          s.once("error", reject);
        }),
    ),
  );
  const tokens: Promise<string>[] = [];
  for (let i = 0; i < cmd.count; i++) tokens.push(mintVehicleToken(keys, `${cmd.prefix}-${cmd.first + i}`, { ttlSeconds: 3600 }));
  const minted = await Promise.all(tokens);
  streams = minted.map((token, i) => {
    const index = cmd.first + i;
    const [lat, lon] = simPosition(index);
    return {
      index,
      vehicleId: `${cmd.prefix}-${index}`,
      t: vehicleTemplate(`${cmd.prefix}-${index}`, lat, lon),
      token,
      session: i % cmd.connections,
      stream: null,
      seq: 0,
      lastMs: 0,
      durable: 0,
      open: false,
      closed: false,
      sent: null,
      pending: new Uint8Array(64),
      pendingLength: 0,
    };
  });
}

/** Opens every stream, `batch` at a time; resolves when each has its first ack (or failed). */
async function openAll(batch: number, timeoutMs: number): Promise<void> {
  const deadline = now() + timeoutMs;
  for (let i = 0; i < streams.length; i += batch) {
    const slice = streams.slice(i, i + batch);
    for (const v of slice) openStream(v);
    while (slice.some((v) => !v.open && !v.closed) && now() < deadline) await Bun.sleep(5);
  }
}

function progress(): void {
  send({ type: "progress", counters: { ...counters }, at: Date.now() });
}

async function blast(windowSize: number, warmupMs: number, durationMs: number): Promise<{ acked: number; seconds: number }> {
  mode = "blast";
  blastWindow = Math.min(windowSize, RING);
  const t0 = wallMs();
  for (const v of streams) if (v.open && !v.closed) writePoints(v, blastWindow, t0, 0);
  await Bun.sleep(warmupMs);
  const a0 = counters.acked;
  const s0 = now();
  await Bun.sleep(durationMs);
  const acked = counters.acked - a0;
  const seconds = (now() - s0) / 1000;
  mode = "idle";
  return { acked, seconds };
}

/** Offers `rate` points/s spread over the streams round-robin; records ack latency after the warm-up. */
async function steady(
  rate: number,
  warmupMs: number,
  durationMs: number,
): Promise<{ acked: number; sent: number; seconds: number; unacked: number; gaps: TimerGaps }> {
  mode = "steady";
  for (const v of streams) v.sent = new Float64Array(RING);
  const live = streams.filter((v) => v.open && !v.closed);
  let next = 0;
  let offered = 0;
  const start = now();
  let a0 = 0;
  let sent0 = 0;
  let s0 = 0;
  const end = start + warmupMs + durationMs;
  const gaps: TimerGaps = { over5: 0, over10: 0, over20: 0, maxMs: 0 };
  let lastTick = start;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const t = now();
      if (histogram) {
        const gap = t - lastTick;
        if (gap > 5) gaps.over5++;
        if (gap > 10) gaps.over10++;
        if (gap > 20) gaps.over20++;
        if (gap > gaps.maxMs) gaps.maxMs = gap;
      }
      lastTick = t;
      if (!histogram && t - start >= warmupMs) {
        histogram = createHistogram();
        a0 = counters.acked;
        sent0 = counters.sent;
        s0 = t;
      }
      const due = Math.floor(((t - start) / 1000) * rate) - offered;
      const wall = wallMs();
      for (let i = 0; i < due && live.length > 0; i++) {
        let v = live[next++ % live.length]!;
        // A stream with RING points in flight is stuck: skip it rather than overwrite send times.
        for (let tries = 0; (v.closed || v.seq - v.durable >= RING - 1) && tries < live.length; tries++) v = live[next++ % live.length]!;
        writePoints(v, 1, wall, t);
      }
      offered += Math.max(0, due);
      if (t >= end) {
        clearInterval(timer);
        resolve();
      }
    }, 1);
  });
  const seconds = (now() - s0) / 1000;
  const sent = counters.sent - sent0;
  const acked = counters.acked - a0;
  // Give the last acks a moment, so that the tail of the histogram is not cut off.
  await Bun.sleep(200);
  // Points still unacked count with their age so far (a lower bound), so that an overloaded
  // gateway shows in the tail instead of leaving it out.
  const at = now();
  let unacked = 0;
  if (histogram) {
    for (const v of streams) {
      if (!v.sent) continue;
      for (let q = Math.max(v.durable + 1, v.seq - RING + 2); q <= v.seq; q++) {
        const t = v.sent[q % RING]!;
        if (t >= s0) {
          histogram.record(at - t);
          unacked++;
        }
      }
    }
  }
  const result = { acked, sent, seconds, unacked, gaps };
  mode = "idle";
  return result;
}

async function closeAll(timeoutMs: number): Promise<void> {
  for (const v of streams) if (v.stream && !v.closed) v.stream.end();
  const deadline = now() + timeoutMs;
  while (streams.some((v) => !v.closed) && now() < deadline) await Bun.sleep(20);
  for (const s of sessions) s.close();
  for (const v of streams) if (!v.closed) v.stream?.close();
}

let ticker: ReturnType<typeof setInterval> | null = null;

process.on("message", async (raw: unknown) => {
  const cmd = raw as WorkerCommand;
  try {
    switch (cmd.type) {
      case "init":
        await init(cmd);
        send({ type: "ready" });
        break;
      case "open": {
        ticker ??= setInterval(progress, 1000);
        const t = now();
        await openAll(cmd.batch, cmd.timeoutMs);
        send({ type: "opened", open: counters.open, failed: streams.length - counters.open, ms: now() - t, lastError });
        break;
      }
      case "blast": {
        const r = await blast(cmd.window, cmd.warmupMs, cmd.durationMs);
        send({ type: "blasted", ...r, counters: { ...counters }, rejectReasons: [...rejectReasons], lastError });
        break;
      }
      case "steady": {
        const r = await steady(cmd.rate, cmd.warmupMs, cmd.durationMs);
        const h = histogram!;
        histogram = null;
        for (const v of streams) v.sent = null;
        send({ type: "steadied", ...r, histogram: h.toJSON(), counters: { ...counters }, rejectReasons: [...rejectReasons], lastError });
        break;
      }
      case "settle": {
        // Wait until every stream's sent points are acked (or the timeout).
        const deadline = now() + cmd.timeoutMs;
        while (streams.some((v) => !v.closed && v.seq > v.durable) && now() < deadline) await Bun.sleep(10);
        const behind = streams.filter((v) => !v.closed && v.seq > v.durable).length;
        send({ type: "settled", behind, counters: { ...counters } });
        break;
      }
      case "close": {
        await closeAll(cmd.timeoutMs);
        if (ticker) clearInterval(ticker);
        send({ type: "closed", counters: { ...counters } });
        setTimeout(() => process.exit(0), 50);
        break;
      }
    }
  } catch (err) {
    send({ type: "failed", message: err instanceof Error ? err.message : String(err) });
  }
});

send({ type: "hello" });
