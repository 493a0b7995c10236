// A gRPC Sync whose client does not read its acks for a while, written against Node's own
// node:http2 (nghttp2), run with `node`: unlike grpcio's core or Bun's client, it leaves response
// bytes unread at the HTTP/2 level (no WINDOW_UPDATE) while nothing consumes them. For
// gateway/test/sync-unread.test.ts. The call has a 6 s deadline.
//
// usage: node sync-unread.mjs URL TOKEN FRAMES_FILE UNREAD_MS
// Writes the gRPC-framed SyncRequests of FRAMES_FILE as the server takes them, reads nothing for
// UNREAD_MS, then reads to the end and prints {"written": bytes written while unread, "status",
// "message", "body": hex of every response frame}.
import http2 from "node:http2";
import { readFileSync } from "node:fs";

const [url, token, file, unreadMs] = process.argv.slice(2);
const frames = readFileSync(file);
const session = http2.connect(url);
session.on("error", (err) => {
  console.log(JSON.stringify({ error: String(err) }));
  process.exit(1);
});
const stream = session.request({
  ":method": "POST",
  ":path": "/fleet.v1.IngestService/Sync",
  "content-type": "application/grpc",
  te: "trailers",
  authorization: `Bearer ${token}`,
  // A call that hangs ends with a status (DEADLINE_EXCEEDED) before the test gives up on it.
  "grpc-timeout": "6S",
});
let written = 0;
let off = 0;
const next = () => {
  if (off >= frames.length) return stream.end();
  const chunk = frames.subarray(off, off + 16 * 1024);
  off += chunk.length;
  stream.write(chunk, () => {
    written += chunk.length;
    next();
  });
};
next();
let trailers = {};
stream.on("trailers", (t) => (trailers = t));
const body = [];
setTimeout(() => {
  const writtenWhileUnread = written;
  stream.on("data", (d) => {
    body.push(d);
    if (process.env.DEBUG_UNREAD) console.error("data", d.length);
  });
  stream.on("close", () => {
    console.log(
      JSON.stringify({
        written: writtenWhileUnread,
        status: trailers["grpc-status"],
        message: trailers["grpc-message"],
        body: Buffer.concat(body).toString("hex"),
      }),
    );
    session.close();
  });
}, Number(unreadMs));
