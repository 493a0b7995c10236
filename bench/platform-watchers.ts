/**
 * Browser-style watcher child of `bench platform`: its watches go through Connect-Web's own
 * transport (@connectrpc/connect-web's createConnectTransport on fetch, the Connect protocol,
 * binary), as the live map page does, each watch a server-streaming call on its own HTTP/1.1
 * connection. Vehicle, order and area watches. For every MOVE or ENTER it records the time from
 * the point's recorded_at (the load generator writes the send time there) to its arrival.
 *
 * Speaks the same IPC messages as bench/watch-worker.ts (WatchCommand / WatchEvent), with order
 * watches added as a vehicles spec whose single id is "order:<fleet>/<order>".
 */
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { EventKind, TrackerService, type VehicleEvent } from "../gen/fleet/v1/tracker_pb";
import { createHistogram, type Histogram } from "./histogram";
import type { WatchCommand, WatchEvent } from "./watch-protocol";

const send = (e: WatchEvent) => process.send!(e);
const nowMs = () => performance.timeOrigin + performance.now();

let histogram: Histogram = createHistogram();
let recording = false;
let events = 0;
let messages = 0;
let errors = 0;
let lastError = "";
let closing = false;
const aborts: AbortController[] = [];

function onEvents(list: VehicleEvent[]): void {
  for (const e of list) {
    if (e.kind !== EventKind.MOVE && e.kind !== EventKind.ENTER) continue;
    const at = e.vehicle?.position?.recordedAt;
    if (!at) continue;
    events++;
    if (recording) histogram.record(nowMs() - (Number(at.seconds) * 1000 + Math.floor(at.nanos / 1e6)));
  }
}

async function init(cmd: Extract<WatchCommand, { type: "init" }>): Promise<{ open: number; failed: number }> {
  const transport = createConnectTransport({ baseUrl: cmd.url, useBinaryFormat: true });
  const client = createClient(TrackerService, transport);
  const headers = { authorization: `Bearer ${cmd.token}` };
  let open = 0;
  let failed = 0;
  await Promise.all(
    cmd.watches.map(
      (w) =>
        new Promise<void>((resolve) => {
          const abort = new AbortController();
          aborts.push(abort);
          let started = false;
          const start = (ok: boolean) => {
            if (started) return;
            started = true;
            if (ok) open++;
            else failed++;
            resolve();
          };
          const order = w.kind === "vehicles" && w.ids.length === 1 && w.ids[0]!.startsWith("order:") ? w.ids[0]!.slice(6) : "";
          const stream =
            w.kind === "area"
              ? client.watchArea(
                  { area: { shape: { case: "circle", value: { lat: w.lat, lon: w.lon, radiusM: w.radiusM } } } },
                  { headers, signal: abort.signal },
                )
              : client.watchVehicles(order ? { orderId: order } : { vehicleIds: w.ids }, { headers, signal: abort.signal });
          (async () => {
            try {
              for await (const res of stream) {
                if (recording) messages++;
                if (!started && res.events.some((e) => e.kind === EventKind.SNAPSHOT_END)) start(true);
                onEvents(res.events);
              }
              if (!closing) {
                errors++;
                lastError = "the watch ended";
              }
            } catch (err) {
              if (!closing) {
                errors++;
                lastError = err instanceof Error ? err.message : String(err);
              }
            }
            start(false);
          })();
        }),
    ),
  );
  return { open, failed };
}

process.on("message", async (message) => {
  const cmd = message as WatchCommand;
  try {
    switch (cmd.type) {
      case "init":
        send({ type: "ready", ...(await init(cmd)), lastError });
        break;
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
        for (const a of aborts) a.abort();
        send({ type: "closed" });
        break;
    }
  } catch (err) {
    send({ type: "failed", message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  }
});
send({ type: "hello" });
