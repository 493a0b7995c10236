// W node:http2 connections (node's nghttp2), one Watch stream each; reads until every stream ends.
// usage: node watch-client.cjs PORT W ROUNDS
const http2 = require("node:http2");
const [port, w, rounds] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
let bytes = 0,
  ended = 0;
const t0 = Date.now();
for (let i = 0; i < w; i++) {
  const s = http2.connect(`http://127.0.0.1:${port}`, { localAddress: `127.0.0.${2 + (i % 50)}` });
  s.on("error", () => {});
  const req = s.request({ ":method": "POST", ":path": "/h2lite.Demo/Watch", "content-type": "application/grpc", te: "trailers" });
  const m = Buffer.alloc(13);
  m.writeUInt32BE(8, 1);
  m.writeUInt32BE(w, 5);
  m.writeUInt32BE(rounds, 9);
  req.end(m);
  req.on("data", (d) => {
    bytes += d.length;
  });
  req.on("end", () => {
    s.close();
    if (++ended === w) console.log(JSON.stringify({ watches: w, messages: bytes / 29, ms: Date.now() - t0 }));
  });
  req.on("error", () => {});
}
