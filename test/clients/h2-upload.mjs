// A gRPC client-streaming Upload written against Node's own node:http2 (nghttp2), run with `node`,
// not Bun: an HTTP/2 implementation that shares no code with the gateway's. For
// test/long-streams.test.ts.
//
// usage: node h2-upload.mjs URL TOKEN FRAMES_FILE
//   FRAMES_FILE holds the request's gRPC-framed UploadRequest messages, back to back.
// Every 100 ms it prints {"t": ms, "written": bytes whose write completed}; at the end
// {"done": true, "status": grpc-status, "message": grpc-message, "body": hex of the response}.
import http2 from "node:http2";
import { readFileSync } from "node:fs";

const [url, token, file] = process.argv.slice(2);
const frames = readFileSync(file);
const session = http2.connect(url);
session.on("error", (err) => {
  console.log(JSON.stringify({ done: true, error: String(err) }));
  process.exit(1);
});
const stream = session.request({
  ":method": "POST",
  ":path": "/fleet.v1.IngestService/Upload",
  "content-type": "application/grpc",
  te: "trailers",
  authorization: `Bearer ${token}`,
});
const t0 = Date.now();
let written = 0;
const CHUNK = 16 * 1024;
const timer = setInterval(() => console.log(JSON.stringify({ t: Date.now() - t0, written })), 100);
// Writes chunk after chunk, each once the previous one completed: `written` is what the server's
// flow-control window let through, not what sits in this process.
let off = 0;
const next = () => {
  if (off >= frames.length) return stream.end();
  const chunk = frames.subarray(off, off + CHUNK);
  off += chunk.length;
  stream.write(chunk, () => {
    written += chunk.length;
    next();
  });
};
next();
const body = [];
let trailers = {};
stream.on("data", (d) => body.push(d));
stream.on("trailers", (t) => (trailers = t));
stream.on("close", () => {
  clearInterval(timer);
  console.log(
    JSON.stringify({
      done: true,
      written,
      status: trailers["grpc-status"],
      message: trailers["grpc-message"],
      body: Buffer.concat(body).toString("hex"),
    }),
  );
  session.close();
});
