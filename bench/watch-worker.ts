/**
 * Watcher child of `bench watch`: holds its watches and records, for every live update, the time
 * from the point's recorded_at (set by the load generator when it sent the point) to its arrival.
 *
 * - grpc: WatchVehicles / WatchArea through connect-node's gRPC transport over a few HTTP/2 connections.
 * - redis: the seeds' way, one Redis connection per watcher SUBSCRIBEd to one channel per vehicle,
 *   fed by the tracker's newer-wins script (TRACKER_REDIS_PUBSUB); the payload is the state record.
 *
 * recorded_at has millisecond precision (the load generator writes whole ms), so each sample is
 * late by up to 1 ms, equally in both modes.
 */
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import Redis from "ioredis";
import { EventKind, TrackerService, type VehicleEvent } from "../gen/fleet/v1/tracker_pb";
import { createHistogram, type Histogram } from "./histogram";
import type { WatchCommand, WatchEvent } from "./watch-protocol";

const send = (e: WatchEvent) => process.send!(e);
const nowMs = () => performance.timeOrigin + performance.now();

let histogram: Histogram = createHistogram();
let recording = false;
let events = 0;
let errors = 0;
let lastError = "";
const aborts: AbortController[] = [];
const redisConns: Redis[] = [];

function onEvents(list: VehicleEvent[]): void {
  for (const e of list) {
    if (e.kind !== EventKind.MOVE && e.kind !== EventKind.ENTER) continue;
    const t = e.vehicle?.position?.recordedAt;
    if (!t) continue;
    events++;
    if (recording) histogram.record(nowMs() - (Number(t.seconds) * 1000 + t.nanos / 1e6));
  }
}

async function initGrpc(cmd: Extract<WatchCommand, { type: "init" }>): Promise<{ open: number; failed: number }> {
  const clients: Client<typeof TrackerService>[] = Array.from({ length: cmd.connections }, () =>
    createClient(TrackerService, createGrpcTransport({ baseUrl: cmd.url })),
  );
  const headers = { authorization: `Bearer ${cmd.token}` };
  let open = 0;
  let failed = 0;
  await Promise.all(
    cmd.watches.map(
      (w, i) =>
        new Promise<void>((resolve) => {
          const abort = new AbortController();
          aborts.push(abort);
          const client = clients[i % clients.length]!;
          const stream =
            w.kind === "vehicles"
              ? client.watchVehicles({ vehicleIds: w.ids }, { headers, signal: abort.signal })
              : client.watchArea({ area: { shape: { case: "circle", value: { lat: w.lat, lon: w.lon, radiusM: w.radiusM } } } }, { headers, signal: abort.signal });
          let started = false;
          (async () => {
            try {
              for await (const res of stream) {
                if (!started && res.events.some((e) => e.kind === EventKind.SNAPSHOT_END)) {
                  started = true;
                  open++;
                  resolve();
                }
                onEvents(res.events);
              }
            } catch (err) {
              if (abort.signal.aborted) return;
              errors++;
              lastError = err instanceof Error ? err.message : String(err);
              if (!started) {
                failed++;
                resolve();
              }
            }
          })();
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
        recording = true;
        break;
      case "report":
        recording = false;
        send({ type: "report", histogram: histogram.toJSON(), events, errors, lastError });
        break;
      case "close":
        for (const a of aborts) a.abort();
        for (const r of redisConns) r.disconnect();
        send({ type: "closed" });
        break;
    }
  } catch (err) {
    send({ type: "failed", message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  }
});
send({ type: "hello" });
