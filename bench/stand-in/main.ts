/**
 * TEMPORARY stand-in for the gateway, only to find the load generator's own ceiling until
 * gateway/ exists: raw node:http2, Sync only, first ack right away, then one coalesced ack per
 * stream every 2 ms. No auth, no JetStream. Delete when gateway/ lands.
 */
import http2 from "node:http2";
import { loadConfig } from "../../lib/config";

const config = loadConfig();

interface S {
  stream: http2.ServerHttp2Stream;
  seq: number;
  acked: number;
  pending: Buffer | null;
}
const dirty = new Set<S>();

function ackFrame(durable: number): Buffer {
  const inner: number[] = [0x10];
  let v = durable;
  while (v >= 0x80) {
    inner.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  inner.push(v);
  const msg = [0x0a, inner.length, ...inner];
  const b = Buffer.alloc(5 + msg.length);
  b.writeUInt32BE(msg.length, 1);
  b.set(msg, 5);
  return b;
}

setInterval(() => {
  for (const s of dirty) {
    if (s.seq > s.acked) {
      s.acked = s.seq;
      s.stream.write(ackFrame(s.acked));
    }
  }
  dirty.clear();
}, 2);

const server = http2.createServer({ settings: { maxConcurrentStreams: config.maxStreamsPerConnection } });
server.on("stream", (stream: http2.ServerHttp2Stream) => {
  const s: S = { stream, seq: 0, acked: 0, pending: null };
  stream.respond({ ":status": 200, "content-type": "application/grpc+proto" }, { waitForTrailers: true });
  stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
  stream.write(ackFrame(0));
  stream.on("data", (chunk: Buffer) => {
    let buf = s.pending ? Buffer.concat([s.pending, chunk]) : chunk;
    s.pending = null;
    let off = 0;
    while (buf.length - off >= 5) {
      const len = buf.readUInt32BE(off + 1);
      if (buf.length - off < 5 + len) break;
      s.seq++; // the bench sends consecutive seqs from 1
      off += 5 + len;
    }
    if (off < buf.length) s.pending = buf.subarray(off);
    dirty.add(s);
  });
  stream.on("end", () => {
    if (s.seq > s.acked) stream.write(ackFrame(s.seq));
    stream.end();
  });
  stream.on("error", () => {});
});
server.listen(config.gatewayPort, "127.0.0.1", () => {
  const port = (server.address() as { port: number }).port;
  console.error(JSON.stringify({ level: "info", msg: "listening", service: "gateway", url: `http://127.0.0.1:${port}` }));
});
process.on("SIGTERM", () => process.exit(0));
