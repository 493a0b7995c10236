/**
 * The seeds' live fan-out, end to end, for `bench platform` to measure beside the tracker's watches:
 * the tracker's script PUBLISHes each update on a Redis channel per vehicle (TRACKER_REDIS_PUBSUB),
 * a Socket.io server with its Redis adapter (@socket.io/redis-adapter: the stack one of the seeds
 * recommends to scale Socket.io out) subscribes to the channels its clients watch and emits each
 * update to the vehicle's room, and socket.io-client watchers (each its own WebSocket) receive it.
 *
 * Two roles in one file:
 * - `bun bench/platform-socketio.ts server <redisUrl> <channelPrefix>`: the server, on a free port;
 *   prints `{"listening":PORT}` once ready;
 * - as an IPC child (the parent speaks WatchCommand / WatchEvent, as to bench/watch-worker.ts): the
 *   watchers, one socket.io-client connection per vehicle spec. Each update is the tracker's state
 *   record; its recorded_at (ms) is the double at byte 8 (tracker/state-codec.ts), the send time
 *   the load generator wrote.
 */
import { createServer } from "node:http";
import { createAdapter } from "@socket.io/redis-adapter";
import Redis from "ioredis";
import { Server } from "socket.io";
import { io as connectSocket, type Socket } from "socket.io-client";
import { createHistogram, type Histogram } from "./histogram";
import type { WatchCommand, WatchEvent } from "./watch-protocol";

async function serve(redisUrl: string, prefix: string): Promise<void> {
  const http = createServer();
  const pub = new Redis(redisUrl);
  const sub = pub.duplicate();
  const io = new Server(http, { adapter: createAdapter(pub, sub), transports: ["websocket"] });
  // The updates: one subscription per watched vehicle, taken when its first watcher joins.
  const updates = new Redis(redisUrl);
  const watchers = new Map<string, number>();
  updates.on("messageBuffer", (channel: Buffer, message: Buffer) => {
    io.to(channel.toString("utf8").slice(prefix.length)).emit("pos", message);
  });
  io.on("connection", (socket) => {
    const mine: string[] = [];
    socket.on("watch", async (ids: string[], ack: (ok: boolean) => void) => {
      for (const id of ids) {
        await socket.join(id);
        mine.push(id);
        const n = watchers.get(id) ?? 0;
        watchers.set(id, n + 1);
        if (n === 0) await updates.subscribe(prefix + id);
      }
      ack(true);
    });
    socket.on("disconnect", () => {
      for (const id of mine) {
        const n = (watchers.get(id) ?? 1) - 1;
        if (n > 0) watchers.set(id, n);
        else {
          watchers.delete(id);
          void updates.unsubscribe(prefix + id);
        }
      }
    });
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const address = http.address();
  process.stdout.write(`${JSON.stringify({ listening: typeof address === "object" && address ? address.port : 0 })}\n`);
}

const send = (e: WatchEvent) => process.send!(e);
const nowMs = () => performance.timeOrigin + performance.now();
let histogram: Histogram = createHistogram();
let recording = false;
let events = 0;
let errors = 0;
let lastError = "";
const sockets: Socket[] = [];

function recordedAt(message: unknown): number {
  const bytes = message instanceof ArrayBuffer ? new Uint8Array(message) : message instanceof Uint8Array ? message : new Uint8Array(0);
  if (bytes.length < 16) return Number.NaN;
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getFloat64(8, true);
}

async function watch(cmd: Extract<WatchCommand, { type: "init" }>): Promise<{ open: number; failed: number }> {
  let open = 0;
  let failed = 0;
  for (let i = 0; i < cmd.watches.length; i += 100) {
    await Promise.all(
      cmd.watches.slice(i, i + 100).map(
        (w) =>
          new Promise<void>((resolve) => {
            const socket = connectSocket(cmd.url, { transports: ["websocket"], forceNew: true, reconnection: false });
            sockets.push(socket);
            const timer = setTimeout(() => {
              failed++;
              lastError = "no answer to watch within 20 s";
              resolve();
            }, 20_000);
            socket.on("pos", (message: unknown) => {
              const at = recordedAt(message);
              if (Number.isNaN(at)) return;
              events++;
              if (recording) histogram.record(nowMs() - at);
            });
            socket.on("connect_error", (err) => {
              errors++;
              lastError = err.message;
            });
            socket.on("connect", () => {
              socket.emit("watch", w.ids, () => {
                clearTimeout(timer);
                open++;
                resolve();
              });
            });
          }),
      ),
    );
  }
  return { open, failed };
}

if (import.meta.main) {
  if (process.argv[2] === "server") await serve(process.argv[3]!, process.argv[4]!);
  else {
    process.on("message", async (message) => {
      const cmd = message as WatchCommand;
      try {
        switch (cmd.type) {
          case "init":
            send({ type: "ready", ...(await watch(cmd)), lastError });
            break;
          case "record":
            histogram = createHistogram();
            recording = true;
            break;
          case "report":
            recording = false;
            send({ type: "report", histogram: histogram.toJSON(), events, messages: 0, errors, lastError });
            break;
          case "close":
            for (const s of sockets) s.disconnect();
            send({ type: "closed" });
            break;
        }
      } catch (err) {
        send({ type: "failed", message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
      }
    });
    send({ type: "hello" });
  }
}
