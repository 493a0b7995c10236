// Demo gRPC services on h2lite (mode "lite") or node:http2 (mode "node"), for the memory run
// (SIGUSR1: GC + heap census, SIGUSR2: GC) and the CPU-per-message run (SIGWINCH prints cpuUsage).
// usage: bun server.ts lite|node PORT
import http2 from "node:http2";
import { heapStats } from "bun:jsc";
import { create } from "@bufbuild/protobuf";
import { ackResponseEncoder } from "../../gateway/ack-encoder.ts";
import { SyncResponseSchema, IngestAckSchema } from "../../gen/fleet/v1/ingest_pb.ts";
import { type Call, type GrpcHandler, H2Server } from "../../lib/h2/server";

const mode = process.argv[2] ?? "lite";
const port = Number(process.argv[3] ?? 50051);
const encodeAck = ackResponseEncoder(SyncResponseSchema);
const ack = create(IngestAckSchema, { vehicleId: "veh-1", durableSeq: 0, accepted: 1 });
const FLOOD_MESSAGE = Buffer.alloc(24, 7);

function ackBytes(seq: number): Uint8Array {
  ack.durableSeq = seq;
  return encodeAck({ ack });
}

// --- h2lite handlers: one object per method, per-call state in call.state ---
const Sync: GrpcHandler = {
  onOpen(call) {
    call.state = 0;
    call.sendHeaders();
  },
  onMessage(call, _buf, _start, _end) {
    call.state = (call.state as number) + 1;
    call.write(ackBytes(call.state as number));
  },
  onHalfClose(call) {
    call.end(0);
  },
};
const Echo: GrpcHandler = {
  onMessage(call, buf, start, end) {
    const message = buf.subarray(start, end);
    call.write(message);
  },
  onHalfClose(call) {
    call.end(0);
  },
};
const Flood: GrpcHandler = {
  onMessage(call, buf, start, end) {
    const message = buf.subarray(start, end);
    const perTick = message.length >= 8 ? message.readUInt32BE(4) : 0;
    call.state = { left: message.readUInt32BE(0), perTick };
    if (perTick > 0) setImmediate(tick, call);
    else pump(call);
  },
  onDrain(call) {
    pump(call);
  },
  onHalfClose() {},
};
/** `perTick` messages per event-loop turn: each turn's writes go out in their own send(). */
function tick(call: Call): void {
  const s = call.state as { left: number; perTick: number };
  for (let i = 0; i < s.perTick && s.left > 0; i++) {
    s.left--;
    call.write(FLOOD_MESSAGE);
  }
  if (s.left === 0) call.end(0);
  else setImmediate(tick, call);
}
function pump(call: Call): void {
  const s = call.state as { left: number };
  while (s.left > 0) {
    s.left--;
    if (!call.write(FLOOD_MESSAGE)) break;
  }
  if (s.left === 0) call.end(0);
}

// Fan-out like a watch server: W watch streams (one per connection); once all W are open, each
// event-loop turn writes one message to every watch, for R rounds. Prints the CPU of the rounds.
interface Watch {
  write(m: Uint8Array): void;
  end(): void;
}
const watches: Watch[] = [];
function addWatch(w: Watch, want: number, rounds: number): void {
  watches.push(w);
  if (watches.length < want) return;
  const t0 = process.cpuUsage();
  let round = 0;
  const step = () => {
    for (const x of watches) x.write(FLOOD_MESSAGE);
    if (++round < rounds) return void setImmediate(step);
    for (const x of watches) x.end();
    setImmediate(() => {
      const u = process.cpuUsage(t0);
      const n = rounds * watches.length;
      console.log(
        `watch ${JSON.stringify({ mode, watches: watches.length, rounds, messages: n, cpu_us: u.user + u.system, user_us_per_message: u.user / n, system_us_per_message: u.system / n, us_per_message: (u.user + u.system) / n })}`,
      );
      watches.length = 0;
    });
  };
  setImmediate(step);
}
const WatchMethod: GrpcHandler = {
  onMessage(call, buf, start, end) {
    const message = buf.subarray(start, end);
    addWatch({ write: (m) => call.write(m), end: () => call.end(0) }, message.readUInt32BE(0), message.readUInt32BE(4));
  },
  onHalfClose() {},
};

if (mode === "lite") {
  const routes: Record<string, GrpcHandler> = {
    "/fleet.v1.IngestService/Sync": Sync,
    "/h2lite.Demo/Echo": Echo,
    "/h2lite.Demo/Flood": Flood,
    "/h2lite.Demo/Watch": WatchMethod,
  };
  const tls = process.env.H2LITE_TLS_DIR
    ? {
        cert: await Bun.file(`${process.env.H2LITE_TLS_DIR}/cert.pem`).text(),
        key: await Bun.file(`${process.env.H2LITE_TLS_DIR}/key.pem`).text(),
      }
    : undefined;
  new H2Server((path) => routes[path], { maxConcurrentStreams: 100 }).listen("127.0.0.1", port, tls);
} else {
  // node:http2 in Bun: the same three methods, gRPC framing by hand.
  const grpcFrame = (m: Uint8Array) => {
    const b = Buffer.allocUnsafe(5 + m.length);
    b[0] = 0;
    b.writeUInt32BE(m.length, 1);
    b.set(m, 5);
    return b;
  };
  const s = http2.createServer({ settings: { maxConcurrentStreams: 100 } });
  s.on("stream", (stream, headers) => {
    const path = headers[":path"];
    stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    let pending = Buffer.alloc(0);
    let seq = 0;
    stream.on("data", (chunk: Buffer) => {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
        const len = pending.readUInt32BE(1);
        const msg = pending.subarray(5, 5 + len);
        pending = pending.subarray(5 + len);
        if (path === "/h2lite.Demo/Watch") {
          addWatch({ write: (m) => stream.write(grpcFrame(m)), end: () => stream.end() }, msg.readUInt32BE(0), msg.readUInt32BE(4));
        } else if (path === "/h2lite.Demo/Flood") {
          let left = msg.readUInt32BE(0);
          const perTick = msg.length >= 8 ? msg.readUInt32BE(4) : 0;
          const tickNode = () => {
            for (let i = 0; i < perTick && left > 0; i++) {
              left--;
              stream.write(grpcFrame(FLOOD_MESSAGE));
            }
            if (left === 0) stream.end();
            else setImmediate(tickNode);
          };
          const go = () => {
            while (left > 0) {
              left--;
              if (!stream.write(grpcFrame(FLOOD_MESSAGE))) return void stream.once("drain", go);
            }
            stream.end();
          };
          if (perTick > 0) setImmediate(tickNode);
          else go();
        } else if (path === "/h2lite.Demo/Echo") stream.write(grpcFrame(msg));
        else stream.write(grpcFrame(ackBytes(++seq)));
      }
    });
    stream.on("end", () => {
      if (path !== "/h2lite.Demo/Flood" && path !== "/h2lite.Demo/Watch") stream.end();
    });
    stream.on("error", () => {});
  });
  s.listen(port, "127.0.0.1");
}
setInterval(() => {}, 1000);
console.log("ready", mode, port, process.pid);

process.on("SIGUSR2", () => {
  Bun.gc(true);
});
process.on("SIGWINCH", () => {
  const u = process.cpuUsage();
  console.log(`cpu ${JSON.stringify({ user: u.user, system: u.system, total: u.user + u.system })}`);
});
let base: Record<string, number> | undefined;
process.on("SIGUSR1", () => {
  Bun.gc(true);
  const h = heapStats();
  if (!base) {
    base = h.objectTypeCounts;
    console.log("base heap", h.heapSize);
    return;
  }
  const diff = Object.entries(h.objectTypeCounts)
    .map(([k, v]) => [k, v - (base![k] ?? 0)] as const)
    .filter(([, d]) => d > 1000)
    .sort((a, b) => b[1] - a[1]);
  console.log("heap", h.heapSize, JSON.stringify(diff.slice(0, 40)));
});
