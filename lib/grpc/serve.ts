/**
 * One port per service: gRPC (h2c, or h2 over TLS), gRPC-Web and Connect (HTTP/1.1 and h2) through
 * one connect-node handler, plus `/healthz`. Browsers reach it over HTTP/1.1 with CORS. `/metrics`
 * (and `/healthz` again) are on a second, admin address, loopback by default: what a service
 * counts (procedures, codes, memory) is for its operators, not for whoever reaches the public port.
 *
 * Cleartext: a `node:net` server peeks at the first bytes of each connection and hands the socket to
 * an `http2` server (the `PRI * HTTP/2.0` preface, i.e. h2c with prior knowledge, what gRPC clients
 * send) or to an `http` server (anything else). TLS: `http2.createSecureServer` with `allowHTTP1`, so
 * ALPN picks h2 or HTTP/1.1.
 *
 * `nativeMethods` names methods whose gRPC calls over HTTP/2 skip connect's adapter for
 * a hand-framed path with the same interceptors (see router.ts): per-message cost, not
 * behaviour, is what differs.
 */
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { TLSSocket } from "node:tls";
import type { AddressInfo } from "node:net";
import {
  cors,
  createConnectRouter,
  createContextValues,
  type ConnectRouter,
  type ContextValues,
  type Interceptor,
} from "@connectrpc/connect";
import { compressionBrotli, compressionGzip, connectNodeAdapter } from "@connectrpc/connect-node";
import type { Registry } from "prom-client";
import { connectionKey } from "./context";
import type { NativeMethod } from "./methods";
import { createNativeGrpc, type NativeGrpc } from "./router";
import { clampTimeoutHeaders } from "./wire";
import { bodyDeadline, boundedCompression, boundH2Writes, fixGrpcTrailers, refuseOversizedUnary } from "./workarounds";
import type { Logger } from "../log";

export interface ServeOptions {
  /** Registers the services, as in connect-es examples: `(router) => router.service(X, impl)`. */
  routes: (router: ConnectRouter) => void;
  host: string;
  /** 0 picks a free port. */
  port: number;
  /**
   * Listen with SO_REUSEPORT: several processes bind the same host and port and the kernel spreads
   * new connections among them, so one machine runs as many gateways as it has cores behind one
   * address. Every process on the port must set it. Default false: a second process on a taken port
   * fails with EADDRINUSE, which is what catches a port given twice by mistake.
   */
  reusePort?: boolean;
  /** PEM certificate and key: serve h2 and HTTP/1.1 over TLS instead of cleartext. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Served on `/metrics` of the admin address. */
  registry: Registry;
  /** Admin address (`/metrics`, `/healthz`); port 0 picks a free one. Default: 127.0.0.1, any free port. */
  admin?: { host: string; port: number };
  log: Logger;
  /** Largest request (and response) message; larger is RESOURCE_EXHAUSTED naming the limit. */
  maxMessageBytes: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS. */
  maxStreamsPerConnection: number;
  /** A connection with no traffic for this long is closed (streams have their own idle rules). */
  idleTimeoutMs: number;
  /** `/healthz` answers 200 "ok" when this returns true, 503 otherwise. Default: always healthy. */
  healthz?: () => boolean;
  interceptors?: Interceptor[];
  contextValues?: (req: http.IncomingMessage | http2.Http2ServerRequest) => ContextValues;
  /** Methods served natively when called over gRPC on HTTP/2 (see router.ts). */
  nativeMethods?: NativeMethod[];
  /**
   * Connections open at once at most; past it a new one is closed at once (default 10,000: a
   * process has 20,000 file descriptors here, and the rest are for NATS, Redis, PostgreSQL, files).
   */
  maxConnections?: number;
  /** A native unary call's request message must arrive within this long of its headers (default 10 s). */
  unaryBodyTimeoutMs?: number;
  /**
   * An HTTP/1.1 request's headers must arrive within this long of the connection (or, on a kept-alive
   * connection, of its first byte after the previous response); past it 408 and the connection is
   * closed (default 10 s, what Bun's own listener allows).
   */
  headersTimeoutMs?: number;
}

export interface Server {
  /** e.g. `http://127.0.0.1:50051` (https with TLS). */
  readonly url: string;
  readonly port: number;
  /** The admin address's URL, e.g. `http://127.0.0.1:41234` (`/metrics`, `/healthz`; plain HTTP/1.1). */
  readonly adminUrl: string;
  /** Closes the listener and asks every connection to finish (HTTP/2 GOAWAY): no new calls, running calls go on. */
  stopAccepting(): Promise<void>;
  /** Resolves true once every connection has ended, false after `timeoutMs`. */
  settled(timeoutMs: number): Promise<boolean>;
  /** Stops accepting, then destroys every connection still open. */
  close(): Promise<void>;
}

// Why serve() never calls session.setLocalWindowSize(): see workarounds.ts (Bun 1.4.5).
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0");

/*
 * Bun 1.4.5's node:http server honours none of headersTimeout, requestTimeout or keepAliveTimeout on
 * a connection handed to it with emit("connection"), which is how the cleartext port shares one
 * listener between HTTP/1.1 and h2c: a client sending its request line one byte a second held its
 * connection (and file descriptor) for as long as it kept trickling. (On a port it listens on
 * itself Bun closes such a client after ~10 s whatever headersTimeout says.) So the deadlines are
 * kept here, per connection: the headers within headersTimeoutMs, and between requests a kept-alive
 * connection idles for idleTimeoutMs at most.
 */

/** Request headers a browser may send, for the CORS preflight. */
const allowedHeaders = [...cors.allowedHeaders, "Authorization"].join(", ");
const exposedHeaders = [...cors.exposedHeaders, "Retry-After", "Retry-After-Ms"].join(", ");
const allowedMethods = cors.allowedMethods.join(", ");

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

type StreamListener = (this: unknown, stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => void;

/**
 * Hands a native method's HTTP/2 stream to the native path before node:http2 makes its
 * compatibility request and response (two stream objects with their state and listeners, which
 * the native path never uses): on a bare server ~2 KB of RSS per open stream, 1.5 KB of it JS
 * heap. The compatibility layer is the one 'stream' listener that a server created with a request
 * handler has (Node and Bun alike); it still gets every other stream. Any other layout is left as
 * it is.
 */
function nativeStreamsFirst(server: http2.Http2Server | http2.Http2SecureServer, native: NativeGrpc | undefined): void {
  if (!native) return;
  const listeners = server.listeners("stream") as StreamListener[];
  if (listeners.length !== 1) return;
  const compat = listeners[0]!;
  server.removeListener("stream", compat);
  server.on("stream", function (this: unknown, stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) {
    if (!native.handleStream(stream, headers)) compat.call(this, stream, headers, ...rest);
  });
}

/** Starts the one-port server and resolves once it listens. */
export async function serve({
  routes,
  host,
  port,
  reusePort = false,
  tls,
  registry,
  log,
  maxMessageBytes,
  maxStreamsPerConnection,
  idleTimeoutMs,
  healthz = () => true,
  interceptors = [],
  contextValues,
  nativeMethods = [],
  unaryBodyTimeoutMs = 10_000,
  maxConnections = 10_000,
  headersTimeoutMs = 10_000,
  admin = { host: "127.0.0.1", port: 0 },
}: ServeOptions): Promise<Server> {
  const rpc = connectNodeAdapter({
    routes,
    grpc: true,
    grpcWeb: true,
    connect: true,
    readMaxBytes: maxMessageBytes,
    writeMaxBytes: maxMessageBytes,
    acceptCompression: [boundedCompression(compressionGzip), boundedCompression(compressionBrotli)],
    interceptors,
    // Each call's connection (connectionKey), as the native path sets it: limits per connection.
    contextValues: (req) =>
      (contextValues?.(req) ?? createContextValues()).set(
        connectionKey,
        req.httpVersionMajor === 2 ? (req as http2.Http2ServerRequest).stream.session : req.socket,
      ),
  });
  const unaryPaths = new Set<string>();
  {
    const router = createConnectRouter();
    routes(router);
    for (const h of router.handlers) if (h.method.methodKind === "unary") unaryPaths.add(h.requestPath);
  }
  const native =
    nativeMethods.length > 0
      ? createNativeGrpc({ methods: nativeMethods, interceptors, contextValues, maxMessageBytes, unaryBodyTimeoutMs })
      : undefined;

  const answerHealthz = (res: http.ServerResponse) => {
    const ok = healthz();
    res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" });
    res.end(ok ? "ok" : "unavailable");
  };
  const adminServer = http.createServer((req, res) => {
    if (req.method === "GET" && req.url === "/healthz") return answerHealthz(res);
    if (req.method === "GET" && req.url === "/metrics") {
      registry.metrics().then(
        (text) => {
          res.writeHead(200, { "content-type": registry.contentType });
          res.end(text);
        },
        (err: unknown) => {
          log.error("metrics failed", { err });
          res.writeHead(500);
          res.end();
        },
      );
      return;
    }
    res.writeHead(404, { "content-type": "text/plain" });
    res.end("not found: this admin address serves GET /metrics and GET /healthz");
  });

  const handler = (req: NodeRequest, anyRes: NodeResponse) => {
    // Both response kinds have the same API; TypeScript cannot call methods of the union.
    const res = anyRes as http.ServerResponse;
    const url = req.url ?? "/";
    const origin = req.headers.origin;
    if (origin) {
      // Bearer tokens, no cookies: any origin may call, as a gRPC client on any host may.
      res.setHeader("Access-Control-Allow-Origin", origin);
      res.setHeader("Vary", "Origin");
      res.setHeader("Access-Control-Expose-Headers", exposedHeaders);
    }
    if (req.method === "OPTIONS") {
      res.writeHead(204, {
        "Access-Control-Allow-Methods": allowedMethods,
        "Access-Control-Allow-Headers": allowedHeaders,
        "Access-Control-Max-Age": "7200",
      });
      res.end();
      return;
    }
    if (req.method === "GET" && url === "/healthz") return answerHealthz(res);
    if (native?.handle(req)) return;
    if (refuseOversizedUnary(req, res, maxMessageBytes)) return;
    clampTimeoutHeaders(req.headers);
    if (req.method === "POST" && unaryPaths.has(url.split("?")[0]!)) bodyDeadline(req, res, unaryBodyTimeoutMs);
    fixGrpcTrailers(res);
    if (req.httpVersionMajor === 2) boundH2Writes(res);
    // A call that ends before reading its whole request (an error, a size limit) leaves DATA
    // unread: read the rest and drop it, so its flow-control credit returns to the connection.
    res.once("finish", () => {
      if (!req.readableEnded) req.resume();
    });
    rpc(req as http.IncomingMessage, res);
  };

  const settings: http2.Settings = { maxConcurrentStreams: maxStreamsPerConnection };
  const sessions = new Set<http2.ServerHttp2Session>();
  const sockets = new Set<net.Socket>();
  const trackSession = (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    // A connection that carries nothing is dropped by the session's timer, which every frame resets.
    // Not by the socket's (set on 'connection' below, and cleared once the connection is h2): in Bun
    // it does not see what node:http2 reads, and cut connections whose streams were sending points
    // at twice the idle timeout (gateway/test/limits.test.ts).
    session.setTimeout(idleTimeoutMs * 2, () => session.close());
    session.once("close", () => sessions.delete(session));
    session.on("error", (err) => log.debug("http2 session error", { err }));
  };

  const deadlines = new Map<net.Socket, ReturnType<typeof setTimeout>>();
  const clearDeadline = (socket: net.Socket) => {
    clearTimeout(deadlines.get(socket));
    deadlines.delete(socket);
  };
  /** The headers of the next request must arrive within headersTimeoutMs: past it 408, then close. */
  const awaitHeaders = (socket: net.Socket) => {
    clearDeadline(socket);
    deadlines.set(
      socket,
      setTimeout(() => {
        deadlines.delete(socket);
        const body = `request headers not received within ${headersTimeoutMs} ms: send the whole request head at once`;
        socket.end(
          `HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
        );
        // A client that does not read the answer does not keep the connection either.
        setTimeout(() => socket.destroy(), 1000).unref();
      }, headersTimeoutMs),
    );
  };
  /** Between requests: idle for idleTimeoutMs at most, then the next request's headers are timed from its first byte. */
  const awaitNextRequest = (socket: net.Socket) => {
    clearDeadline(socket);
    deadlines.set(
      socket,
      setTimeout(() => socket.destroy(), idleTimeoutMs),
    );
    socket.once("data", () => {
      if (deadlines.has(socket)) awaitHeaders(socket);
    });
  };
  /** An HTTP/1.1 request's headers arrived: its connection waits for the next one once it is answered. */
  const headersIn = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => {
    const socket = req.socket as net.Socket;
    if (!deadlines.has(socket)) return;
    clearDeadline(socket);
    res.once("finish", () => {
      if (!socket.destroyed) awaitNextRequest(socket);
    });
  };

  let listener: net.Server;
  let h1: http.Server | undefined;
  if (tls) {
    const secure = http2.createSecureServer({ cert: tls.cert, key: tls.key, allowHTTP1: true, settings }, handler);
    secure.on("session", trackSession);
    // HTTP/1.1 over TLS (ALPN) gets the cleartext port's header deadline; h2 has node:http2's limits.
    secure.on("secureConnection", (socket: TLSSocket) => {
      if (socket.alpnProtocol === "h2") {
        socket.setTimeout(0);
        return;
      }
      socket.once("close", () => clearDeadline(socket));
      awaitHeaders(socket);
    });
    secure.on("request", headersIn);
    nativeStreamsFirst(secure, native);
    listener = secure;
  } else {
    const h2 = http2.createServer({ settings }, handler);
    h2.on("session", trackSession);
    nativeStreamsFirst(h2, native);
    h1 = http.createServer(handler);
    h1.keepAliveTimeout = idleTimeoutMs;
    const h1Server = h1;
    h1Server.on("request", headersIn);
    listener = net.createServer((socket) => {
      if (socket.destroyed) return;
      sockets.add(socket);
      socket.once("close", () => {
        sockets.delete(socket);
        clearDeadline(socket);
      });
      socket.on("error", (err) => log.debug("socket error", { err }));
      // Until the first bytes tell HTTP/1.1 from h2c, and then for an HTTP/1.1 request's headers.
      awaitHeaders(socket);
      let head: Buffer = Buffer.alloc(0);
      const onData = (chunk: Buffer) => {
        head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
        // "PRI " is enough to tell: no HTTP/1 method starts like that.
        if (head.length < 4 && H2_PREFACE.subarray(0, head.length).equals(head)) return;
        socket.off("data", onData);
        socket.pause();
        socket.unshift(head);
        const isH2 = head.subarray(0, 4).equals(H2_PREFACE.subarray(0, 4));
        // An h2c connection may idle between calls (gRPC channels do); its limits are node:http2's.
        if (isH2) {
          clearDeadline(socket);
          socket.setTimeout(0);
        }
        (isH2 ? h2 : h1Server).emit("connection", socket);
        socket.resume();
      };
      socket.on("data", onData);
    });
  }
  let refusedConnections = 0;
  // First of the 'connection' listeners: past the bound a client gets a closed connection (and the
  // log one line per thousand refused).
  listener.prependListener("connection", (socket: net.Socket) => {
    if (sockets.size < maxConnections) return;
    if (refusedConnections++ % 1000 === 0) log.warn("connection refused: too many open", { maxConnections, refused: refusedConnections });
    socket.destroy();
  });
  listener.on("connection", (socket: net.Socket) => {
    if (socket.destroyed) return;
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.setNoDelay(true);
    // Connections that carry nothing at all are dropped; streams have the gateway's idle rule.
    socket.setTimeout(idleTimeoutMs * 2, () => socket.destroy());
  });

  await new Promise<void>((resolve, reject) => {
    listener.once("error", reject);
    listener.listen({ port, host, reusePort }, () => {
      listener.off("error", reject);
      resolve();
    });
  });
  const bound = (listener.address() as AddressInfo).port;
  const hostPart = (h: string) => (h.includes(":") ? `[${h}]` : h);
  const url = `${tls ? "https" : "http"}://${hostPart(host)}:${bound}`;
  try {
    await new Promise<void>((resolve, reject) => {
      adminServer.once("error", reject);
      adminServer.listen(admin.port, admin.host, () => {
        adminServer.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    listener.close();
    throw err;
  }
  const adminUrl = `http://${hostPart(admin.host)}:${(adminServer.address() as AddressInfo).port}`;
  log.info("admin listening", { url: adminUrl, serves: ["/metrics", "/healthz"] });

  let stopped: Promise<void> | undefined;
  const stopAccepting = () =>
    (stopped ??= new Promise<void>((resolve) => {
      listener.close(() => resolve());
      for (const session of sessions) {
        if (!session.closed) session.close();
      }
      h1?.closeIdleConnections();
      // http.Server stays open only for keep-alive; its sockets come from the net listener.
      setImmediate(resolve);
    }));

  return {
    url,
    port: bound,
    adminUrl,
    stopAccepting,
    async settled(timeoutMs) {
      const until = Date.now() + timeoutMs;
      while (sockets.size > 0 || sessions.size > 0) {
        if (Date.now() >= until) return false;
        await Bun.sleep(20);
      }
      return true;
    },
    async close() {
      await stopAccepting();
      for (const session of sessions) session.destroy();
      for (const socket of sockets) socket.destroy();
      h1?.closeAllConnections();
      // Metrics stay readable while the service drains; they go with it.
      adminServer.close();
      adminServer.closeAllConnections();
    },
  };
}
