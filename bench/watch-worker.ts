/**
 * Watcher child of `bench watch`: holds its watches and records, for every live update, the time
 * from the point's recorded_at (set by the load generator when it sent the point) to its arrival.
 *
 * - grpc: WatchVehicles / WatchArea over node:http2 (h2c) as any gRPC client sends them, over
 *   `connections` HTTP/2 connections; each response is read by watch-codec.ts (kind and recorded_at
 *   of every event). A client library's per-message machinery (connect-node's cost ~0.3 of a
 *   core at 30,000 messages/s here) would be measured on this shared machine as the server's.
 * - redis: the seeds' way, one Redis connection per watcher SUBSCRIBEd to one channel per vehicle,
 *   fed by the tracker's newer-wins script (TRACKER_REDIS_PUBSUB); the payload is the state record,
 *   of which it reads recorded_at: the same light work on both sides.
 *
 * recorded_at has millisecond precision (the load generator writes whole ms), so each sample is
 * late by up to 1 ms, equally in both modes.
 */
import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import Redis from "ioredis";
import { EventKind, WatchAreaRequestSchema, WatchVehiclesRequestSchema } from "../gen/fleet/v1/tracker_pb";
import { createHistogram, type Histogram } from "./histogram";
import { readWatchResponse, type EventTime } from "./watch-codec";
import type { WatchCommand, WatchEvent } from "./watch-protocol";

const send = (e: WatchEvent) => process.send!(e);
const nowMs = () => performance.timeOrigin + performance.now();

let histogram: Histogram = createHistogram();
let recording = false;
let events = 0;
/** gRPC messages received while recording (each carries one or more events). */
let messages = 0;
let errors = 0;
let lastError = "";
const sessions: http2.ClientHttp2Session[] = [];
const calls: http2.ClientHttp2Stream[] = [];
const redisConns: Redis[] = [];
let closing = false;

function onEvents(list: EventTime[]): void {
  for (const e of list) {
    if ((e.kind !== EventKind.MOVE && e.kind !== EventKind.ENTER) || Number.isNaN(e.recordedAtMs)) continue;
    events++;
    if (recording) histogram.record(nowMs() - e.recordedAtMs);
  }
}

/** One gRPC length-prefixed frame of `bytes`. */
function grpcFrame(bytes: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + bytes.length);
  out.writeUInt32BE(bytes.length, 1);
  out.set(bytes, 5);
  return out;
}

async function initGrpc(cmd: Extract<WatchCommand, { type: "init" }>): Promise<{ open: number; failed: number }> {
  for (let i = 0; i < cmd.connections; i++) {
    const session = http2.connect(cmd.url);
    session.on("error", (err) => (lastError = err.message));
    sessions.push(session);
  }
  let open = 0;
  let failed = 0;
  await Promise.all(
    cmd.watches.map(
      (w, i) =>
        new Promise<void>((resolve) => {
          const [path, request] =
            w.kind === "vehicles"
              ? ["WatchVehicles", toBinary(WatchVehiclesRequestSchema, create(WatchVehiclesRequestSchema, { vehicleIds: w.ids }))]
              : [
                  "WatchArea",
                  toBinary(
                    WatchAreaRequestSchema,
                    create(WatchAreaRequestSchema, {
                      area: { shape: { case: "circle", value: { lat: w.lat, lon: w.lon, radiusM: w.radiusM } } },
                    }),
                  ),
                ];
          const stream = sessions[i % sessions.length]!.request({
            ":method": "POST",
            ":path": `/fleet.v1.TrackerService/${path}`,
            "content-type": "application/grpc",
            te: "trailers",
            authorization: `Bearer ${cmd.token}`,
          });
          calls.push(stream);
          let started = false;
          let pending: Buffer | undefined;
          const fail = (message: string) => {
            if (closing) return;
            errors++;
            lastError = message;
            if (!started) {
              started = true;
              failed++;
              resolve();
            }
          };
          stream.on("data", (chunk: Buffer) => {
            const buf = pending ? Buffer.concat([pending, chunk]) : chunk;
            let at = 0;
            while (buf.length - at >= 5) {
              const len = buf.readUInt32BE(at + 1);
              if (buf.length - at - 5 < len) break;
              const list = readWatchResponse(buf, at + 5, at + 5 + len);
              at += 5 + len;
              if (recording) messages++;
              if (!started && list.some((e) => e.kind === EventKind.SNAPSHOT_END)) {
                started = true;
                open++;
                resolve();
              }
              onEvents(list);
            }
            pending = at === buf.length ? undefined : buf.subarray(at);
          });
          stream.on("trailers", (t) => {
            if (t["grpc-status"] !== "0") fail(`grpc-status ${t["grpc-status"]}: ${decodeURIComponent(String(t["grpc-message"] ?? ""))}`);
          });
          stream.on("response", (h) => {
            // Trailers-only: the call failed before any message.
            if (h["grpc-status"] !== undefined && h["grpc-status"] !== "0")
              fail(`grpc-status ${h["grpc-status"]}: ${decodeURIComponent(String(h["grpc-message"] ?? ""))}`);
          });
          stream.on("error", (err) => fail(err.message));
          stream.on("close", () => fail("the watch ended"));
          stream.end(grpcFrame(request));
        }),
    ),
  );
  return { open, failed };
}

async function initRedis(cmd: Extract<WatchCommand, { type: "init" }>): Promise<{ open: number; failed: number }> {
  let open = 0;
  let failed = 0;
  for (let i = 0; i < cmd.watches.length; i += 100) {
    await Promise.all(
      cmd.watches.slice(i, i + 100).map(async (w) => {
        const r = new Redis(cmd.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
        redisConns.push(r);
        r.on("error", (err) => {
          lastError = err.message;
        });
        r.on("messageBuffer", (_channel: Buffer, message: Buffer) => {
          events++;
          // The state record: recorded_at (ms) is the double at byte 8 (tracker/state-codec.ts).
          if (recording) histogram.record(nowMs() - message.readDoubleLE(8));
        });
        try {
          await r.connect();
          if (w.ids.length > 0) await r.subscribe(...w.ids.map((id) => `${cmd.channelPrefix}${id}`));
          open++;
        } catch (err) {
          failed++;
          lastError = err instanceof Error ? err.message : String(err);
        }
      }),
    );
  }
  return { open, failed };
}

process.on("message", async (message) => {
  const cmd = message as WatchCommand;
  try {
    switch (cmd.type) {
      case "init": {
        const r = cmd.mode === "grpc" ? await initGrpc(cmd) : await initRedis(cmd);
        send({ type: "ready", ...r, lastError });
        break;
      }
      case "record":
        histogram = createHistogram();
        messages = 0;
        recording = true;
        break;
      case "report":
        recording = false;
        send({ type: "report", histogram: histogram.toJSON(), events, messages, errors, lastError });
        break;
      case "close":
        closing = true;
        for (const c of calls) c.close(http2.constants.NGHTTP2_CANCEL);
        for (const s of sessions) s.close();
        for (const r of redisConns) r.disconnect();
        send({ type: "closed" });
        break;
    }
  } catch (err) {
    send({ type: "failed", message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  }
});
send({ type: "hello" });
