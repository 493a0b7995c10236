// node:http2 client (node's nghttp2) with large windows: asks /h2lite.Demo/Flood for N messages, reads them all.
// usage: node flood-client.cjs PORT N
const http2 = require("node:http2");
const [port, n, perTick] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4] ?? 0)];
const session = http2.connect(`http://127.0.0.1:${port}`, { settings: { initialWindowSize: 16 << 20 } });
session.on("connect", () => session.setLocalWindowSize(64 << 20));
const req = session.request({ ":method": "POST", ":path": "/h2lite.Demo/Flood", "content-type": "application/grpc", te: "trailers" });
const m = Buffer.alloc(13);
m.writeUInt32BE(8, 1);
m.writeUInt32BE(n, 5);
m.writeUInt32BE(perTick, 9);
req.end(m);
let bytes = 0;
const t0 = process.hrtime.bigint();
req.on("data", (d) => {
  bytes += d.length;
});
req.on("trailers", (t) => {
  status = t["grpc-status"];
});
let status;
req.on("end", () => {
  console.log(JSON.stringify({ messages: bytes / 29, bytes, status, ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
  session.close();
});
