/**
 * What serve.ts does because of Bun 1.4.5 or connect-es / connect-node 2.2.0, in one place: each
 * entry says what upstream does, the version it was seen on, and what is done here instead. When
 * an upgrade fixes one, its test (lib/grpc/serve.test.ts, test/edges.test.ts, test/long-streams.test.ts)
 * says whether the workaround can go. The HTTP/1.1 header and idle deadlines (Bun 1.4.5's node:http
 * ignores headersTimeout, requestTimeout and keepAliveTimeout on a connection handed over with
 * emit("connection")) stay inline in serve(), since they hold per-connection state of its servers.
 */
import type http from "node:http";
import type http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Compression } from "@connectrpc/connect/protocol";
import { grpcMessageEncode, tooLargeMessage } from "./wire";

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

/*
 * Bun 1.4.5: not a function here, a call serve() does not make.
 * No session.setLocalWindowSize(): on Bun 1.4.5 it stops every WINDOW_UPDATE the server would send
 * (connection and stream), so any request body past 65,535 bytes stalls for good (a five-line
 * node:http2 server and `curl --http2-prior-knowledge --data-binary @300k` reproduce it). Bun's
 * defaults need no help: it returns connection-level credit as DATA arrives and stream-level
 * credit as the stream is read, so a paused stream (the native path stops reading while its
 * points are not yet durable) pushes back on its client alone, not on its neighbours.
 */

/**
 * connect-es 2.2.0 (connect-node's gRPC trailers; upstream behaviour, not a bug report).
 * Two fixes to the gRPC trailers connect-es writes, in the one place both can be made:
 * - connect-es answers a request message it cannot parse with Internal ("parse binary: …"), where
 *   gRPC and connect-go say INVALID_ARGUMENT (bad bytes from the client). For unary calls the parse
 *   happens before any interceptor runs, so the trailers are where to fix it.
 * - it percent-encodes grpc-message with encodeURIComponent ("/" as %2F), which grpc-js does not
 *   decode; the gRPC spec encodes only bytes outside printable ASCII, so re-encode that way.
 */
export function fixGrpcTrailers(res: NodeResponse): void {
  const add = res.addTrailers.bind(res);
  res.addTrailers = (headers: http.OutgoingHttpHeaders) => {
    const raw = headers["grpc-message"];
    if (typeof raw === "string") {
      let message = raw;
      try {
        message = decodeURIComponent(raw);
      } catch {
        // keep as is
      }
      if (headers["grpc-status"] === "13" && message.startsWith("parse binary")) headers["grpc-status"] = "3";
      headers["grpc-message"] = grpcMessageEncode(message);
    }
    add(headers);
  };
}

/** Bytes written to an HTTP/2 response and not yet flushed past which writes report backpressure. */
const H2_WRITE_HIGH_WATER = 64 * 1024;

/**
 * Bun 1.4.5 (node:http2 compatibility layer; Node's write returns false past highWaterMark).
 * Bun 1.4's Http2ServerResponse.write keeps returning true (and buffers without bound) for a client
 * that stopped reading, after the first window's worth; its write callbacks, though, fire only once
 * the bytes went out. Counting unflushed bytes through those callbacks restores Node's contract
 * (false past the high-water mark, then "drain"), so connect-node's writer waits and a server
 * stream (a watch) sees its slow client instead of filling memory.
 */
export function boundH2Writes(res: http.ServerResponse): void {
  let unflushed = 0;
  let blocked = false;
  const release = () => {
    if (blocked && unflushed < H2_WRITE_HIGH_WATER) {
      blocked = false;
      res.emit("drain");
    }
  };
  const write = res.write.bind(res) as (chunk: unknown, encoding?: unknown, cb?: unknown) => boolean;
  res.write = ((
    chunk: string | Uint8Array,
    encoding?: BufferEncoding | ((err?: Error | null) => void),
    cb?: (err?: Error | null) => void,
  ) => {
    const done = typeof encoding === "function" ? encoding : cb;
    const bytes = typeof chunk === "string" ? Buffer.byteLength(chunk) : chunk.byteLength;
    unflushed += bytes;
    const ok = write(chunk, typeof encoding === "function" ? undefined : encoding, (err?: Error | null) => {
      unflushed -= bytes;
      release();
      done?.(err);
    });
    if (ok && unflushed < H2_WRITE_HIGH_WATER) return true;
    blocked = true;
    return false;
  }) as typeof res.write;
  // A stream that closes with bytes unflushed: wake a writer waiting for "drain" (its next write fails).
  res.once("close", () => {
    unflushed = 0;
    release();
  });
}

/** Content types of Connect's unary calls: the body is the one request message. */
const CONNECT_UNARY_TYPES = new Set(["application/json", "application/proto", "application/json; charset=utf-8"]);

/**
 * connect-node 2.2.0 (its error names the readMaxBytes option).
 * Answers a Connect unary call whose Content-Length is over the limit before connect-node reads it,
 * with the words the native gRPC path uses: connect-node's own error names its option
 * (`readMaxBytes`), which means nothing to a caller. A compressed body is left to connect-node
 * (its size says nothing of the message's); so is a body without a length (connect-node still
 * refuses it past the limit).
 */
/**
 * connect-node 2.2.0 (same: the size error of its decompression names readMaxBytes).
 * connect-node's gzip and brotli with its size error in the native path's words: it already stops
 * inflating at readMaxBytes (a 100 KB gzip of 100 MB costs ~1 MB and a few ms), but its message
 * names that option, which means nothing to a caller.
 */
export function boundedCompression(compression: Compression): Compression {
  return {
    name: compression.name,
    compress: (bytes) => compression.compress(bytes),
    decompress: (bytes, readMaxBytes) =>
      compression.decompress(bytes, readMaxBytes).catch((err: unknown) => {
        if (err instanceof ConnectError && err.code === Code.ResourceExhausted) {
          throw new ConnectError(
            `message is over this server's limit of ${readMaxBytes} bytes once decompressed (${compression.name}): send smaller messages (fewer points in each)`,
            Code.ResourceExhausted,
          );
        }
        throw err;
      }),
  };
}

export function refuseOversizedUnary(req: NodeRequest, anyRes: NodeResponse, maxMessageBytes: number): boolean {
  if (req.method !== "POST") return false;
  const length = Number(req.headers["content-length"]);
  if (!(length > maxMessageBytes)) return false;
  const type = req.headers["content-type"]?.toLowerCase();
  if (type === undefined || !CONNECT_UNARY_TYPES.has(type)) return false;
  const encoding = req.headers["content-encoding"];
  if (encoding !== undefined && encoding !== "identity") return false;
  const res = anyRes as http.ServerResponse;
  const body = JSON.stringify({ code: "resource_exhausted", message: tooLargeMessage(length, maxMessageBytes) });
  // Connect's HTTP status for resource_exhausted.
  res.writeHead(429, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
  // The body is read and dropped, so that the connection (HTTP/1.1 keep-alive) stays usable.
  req.resume();
  return true;
}

/**
 * connect-node 2.2.0 (it sets no deadline on reading a unary request's body).
 * A unary call on connect's path (Connect unary, or gRPC and gRPC-Web to a unary method not served
 * natively) whose request has not all arrived within `timeoutMs` of its headers is answered
 * DEADLINE_EXCEEDED in its protocol's form, with the native path's words, and its body is no longer
 * waited for: connect-node would wait for it as long as the client liked, holding the stream (or,
 * over HTTP/1.1, the connection).
 */
export function bodyDeadline(req: NodeRequest, anyRes: NodeResponse, timeoutMs: number): void {
  if (req.readableEnded) return;
  const res = anyRes as http.ServerResponse;
  const timer = setTimeout(() => {
    if (req.readableEnded || res.headersSent || res.writableEnded) return;
    const message = `request message not received within ${timeoutMs} ms of the headers: send the whole request at once`;
    const type = req.headers["content-type"]?.toLowerCase() ?? "";
    if (req.httpVersionMajor === 1) res.setHeader("connection", "close");
    if (type.startsWith("application/grpc")) {
      // Trailers-only, in the headers, as gRPC and gRPC-Web both allow.
      res.writeHead(200, {
        "content-type": type,
        "grpc-status": String(Code.DeadlineExceeded),
        "grpc-message": grpcMessageEncode(message),
      });
      res.end();
    } else {
      const body = JSON.stringify({ code: "deadline_exceeded", message });
      // Connect's HTTP status for deadline_exceeded.
      res.writeHead(504, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      res.end(body);
    }
    // The rest of the body is not read: over HTTP/1.1 the connection goes, over h2 the stream.
    res.once("finish", () => (req.httpVersionMajor === 1 ? req.socket.destroy() : req.destroy()));
  }, timeoutMs);
  const clear = () => clearTimeout(timer);
  req.once("end", clear);
  req.once("close", clear);
  res.once("close", clear);
}
