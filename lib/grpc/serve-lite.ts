/**
 * A second listener for the native gRPC methods on lib/h2 (the h2lite server on Bun.listen): the
 * gateway's vehicle port (GATEWAY_VEHICLE_PORT). Calls go through the same NativeGrpc as the main
 * port (router.ts: the same interceptors, handlers, status codes and messages); only the transport
 * differs. Other paths answer UNIMPLEMENTED naming the main port.
 *
 * Why: a vehicle on its own connection cost the gateway 21.6-23 KB resident and 56-127 µs of CPU
 * per acked point on node:http2 (bench/README.md, Platform), most of it node:http2's per-session
 * objects, one JS stream event per point and one write per ack. lib/h2 keeps a connection in one
 * object and sends everything a connection got in one event-loop turn in one write.
 *
 * One LiteCall per stream is both the call's input (pushed messages; while paused, received DATA is
 * not credited back, so HTTP/2 flow control holds the vehicle) and its output.
 */
import { fromBinary, type DescMessage, type Message, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type ContextValues } from "@connectrpc/connect";
import type http2 from "node:http2";
import { type Call, type GrpcHandler, H2Server } from "../h2/server";
import { literal } from "../h2/hpack";
import type { Logger } from "../log";
import { Counter, Gauge, type Registry } from "../metrics";
import { type CallInput, type CallOutput, NativeCall } from "./call";
import { contextValuesPrototype } from "./context";
import { encodeResponse } from "./framed-output";
import type { MessageDecoder, MessageEncoder, MessageSink } from "./input";
import type { NativeMethod } from "./methods";
import type { NativeGrpc } from "./router";
import { GRPC_CONTENT_TYPES, tooLargeMessage } from "./wire";

export interface ServeLiteOptions {
  /** The main port's native path (createNativeGrpc): its methods, interceptors and limits. */
  native: NativeGrpc;
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** SO_REUSEPORT, as the main port's (every process on the port must set it). */
  reusePort?: boolean;
  /** PEM certificate and key: h2 over TLS (ALPN "h2") instead of h2c. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  log: Logger;
  /** SETTINGS_MAX_CONCURRENT_STREAMS. */
  maxStreamsPerConnection: number;
  /** Past it a new connection is closed at once. */
  maxConnections: number;
  /** A connection that receives nothing for twice this long gets GOAWAY (the main port's rule). */
  idleTimeoutMs: number;
  /** Named in the UNIMPLEMENTED answer to a path this listener does not serve. */
  mainUrl: string;
  /** Bytes a connection may hold for a peer that does not read (default lib/h2's 1 MiB). */
  maxBufferedBytes?: number;
  /** Where `vehicle_port_connections` and `vehicle_port_socket_writes_total` are registered. */
  registry?: Registry;
}

export interface LiteServer {
  /** e.g. `http://127.0.0.1:50061` (https with TLS). */
  readonly url: string;
  readonly port: number;
  /** Stops listening and sends every connection GOAWAY: running calls go on, new ones are refused. */
  stopAccepting(): Promise<void>;
  /** Resolves true once every connection has ended, false after `timeoutMs`. */
  settled(timeoutMs: number): Promise<boolean>;
  /** Stops accepting, then cuts every connection still open. */
  close(): Promise<void>;
}

/** Held in place of a message: the failure found after the messages held before it. */
const FAILED = Symbol("failed");

/** What every call of one method shares: its codecs and the message size limit. */
interface LiteMethod {
  readonly decode: MessageDecoder<Message>;
  readonly schema: DescMessage;
  readonly encode: MessageEncoder<Message> | undefined;
  readonly maxBytes: number;
}

// LiteCall's flags, in one number: a vehicle's call lives as long as its connection, and with seven
// boolean fields and four of its method's the object took 160 B of heap, 112 B now (experiments/h2lite/mem).
const PAUSED = 1;
const STOPPED = 2;
const ENDED = 4;
const DONE = 8;
const DELIVERING = 16;
const HEADERS_SENT = 32;
const BLOCKED = 64;

/** One call on lib/h2: its input and output for NativeCall. */
class LiteCall implements CallInput, CallOutput {
  native: NativeCall | undefined;
  private sink: MessageSink<Message> | undefined;
  /** Messages received while paused or before `start`, in order; FAILED stands for `heldFailure`. */
  private held: (Message | typeof FAILED)[] | null = null;
  private heldFailure: unknown;
  /** A failure found before `start`. */
  private failure: unknown;
  private flags = 0;
  private waiter: (() => void) | undefined;

  constructor(
    readonly h2: Call,
    private readonly method: LiteMethod,
  ) {
    // Nothing is credited back before the handler reads (auth runs first): a refused caller's
    // stream holds one window of DATA at most.
    h2.pause();
  }

  private get paused(): boolean {
    return (this.flags & PAUSED) !== 0;
  }
  private set paused(on: boolean) {
    this.flags = on ? this.flags | PAUSED : this.flags & ~PAUSED;
  }
  private get stopped(): boolean {
    return (this.flags & STOPPED) !== 0;
  }
  private set stopped(on: boolean) {
    this.flags = on ? this.flags | STOPPED : this.flags & ~STOPPED;
  }
  private get ended(): boolean {
    return (this.flags & ENDED) !== 0;
  }
  private set ended(on: boolean) {
    this.flags = on ? this.flags | ENDED : this.flags & ~ENDED;
  }
  private get done(): boolean {
    return (this.flags & DONE) !== 0;
  }
  private set done(on: boolean) {
    this.flags = on ? this.flags | DONE : this.flags & ~DONE;
  }
  private get delivering(): boolean {
    return (this.flags & DELIVERING) !== 0;
  }
  private set delivering(on: boolean) {
    this.flags = on ? this.flags | DELIVERING : this.flags & ~DELIVERING;
  }
  private get headersSent(): boolean {
    return (this.flags & HEADERS_SENT) !== 0;
  }
  private set headersSent(on: boolean) {
    this.flags = on ? this.flags | HEADERS_SENT : this.flags & ~HEADERS_SENT;
  }
  private get blocked(): boolean {
    return (this.flags & BLOCKED) !== 0;
  }
  private set blocked(on: boolean) {
    this.flags = on ? this.flags | BLOCKED : this.flags & ~BLOCKED;
  }

  // --- input (CallInput) ---

  start(sink: MessageSink<Message>): void {
    this.sink = sink;
    if (this.failure !== undefined) return this.fail(this.failure);
    if (this.paused) return;
    this.h2.resume();
    this.deliver();
  }

  pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.h2.pause();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (!this.sink || this.stopped || this.done) return;
    this.h2.resume();
    // Resumed from inside a delivery, the running loop goes on by itself.
    if (!this.delivering) this.deliver();
  }

  stop(): void {
    this.stopped = true;
    this.held = null;
    // What the client still sends is dropped, and credited back.
    this.h2.resume();
  }

  fail(err: unknown): void {
    // The call is aborted (deadline, client gone; NativeContext.abort fails its input): a handler
    // waiting for window (writable) must not wait on, or it outlives its deadline.
    this.wake();
    if (this.stopped || this.done) return;
    if (!this.sink) {
      this.failure ??= err;
      return;
    }
    this.done = true;
    this.held = null;
    this.sink.error(err);
  }

  /** A failure in stream order: after the messages held before it. */
  private failInOrder(err: unknown): void {
    if (this.held !== null && this.held.length > 0) {
      this.heldFailure = err;
      this.held.push(FAILED);
    } else this.fail(err);
  }

  onMessage(buf: Buffer, start: number, end: number): void {
    if (this.stopped || this.done || this.heldFailure !== undefined) return;
    let message: Message;
    try {
      message = this.method.decode(buf, start, end);
    } catch (err) {
      return this.failInOrder(new ConnectError(`parse binary: ${(err as Error).message}`, Code.InvalidArgument));
    }
    if (this.paused || !this.sink || (this.held !== null && this.held.length > 0)) (this.held ??= []).push(message);
    else this.sink.message(message);
  }

  onInvalid(problem: "compressed" | "too-large" | "truncated", length: number): void {
    // The same errors as FramedInput's on the main port.
    this.failInOrder(
      problem === "compressed"
        ? new ConnectError("received compressed envelope, but do not know how to decompress", Code.Internal)
        : problem === "too-large"
          ? new ConnectError(tooLargeMessage(length, this.method.maxBytes), Code.ResourceExhausted)
          : new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument),
    );
  }

  onHalfClose(): void {
    this.ended = true;
    if (this.sink && !this.paused && !this.delivering) this.deliver();
  }

  private deliver(): void {
    this.delivering = true;
    try {
      const held = this.held;
      while (held !== null && held.length > 0 && !this.paused && !this.stopped && !this.done) {
        const m = held.shift()!;
        if (m === FAILED) return this.fail(this.heldFailure);
        this.sink!.message(m);
      }
      // Emptied: the array is not kept for the call's life (most calls hold none after their first point).
      if (this.held !== null && this.held.length === 0) this.held = null;
      if (this.ended && !this.paused && !this.stopped && !this.done && (this.held === null || this.held.length === 0)) {
        this.done = true;
        this.sink!.end();
      }
    } finally {
      this.delivering = false;
    }
  }

  // --- output (CallOutput) ---

  private get gone(): boolean {
    return this.h2.localClosed;
  }

  message(init: MessageInitShape<DescMessage>, headers: Headers): void {
    const { schema, encode, maxBytes } = this.method;
    const bytes = encodeResponse(init, schema, encode, maxBytes);
    if (this.gone) return;
    if (!this.headersSent) {
      this.headersSent = true;
      this.h2.sendHeaders(headerBlock(headers));
    }
    // false: queued behind flow control or an unread socket; the handler waits (writable) for onDrain.
    if (!this.h2.write(bytes)) this.blocked = true;
  }

  writable(): Promise<void> | undefined {
    if (!this.blocked || this.gone) return undefined;
    return new Promise((resolve) => (this.waiter = resolve));
  }

  wake(): void {
    this.blocked = false;
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  end(headers: Headers, trailers: http2.OutgoingHttpHeaders): void {
    if (this.gone) return;
    let block = Buffer.alloc(0);
    for (const key in trailers) {
      const value = trailers[key];
      if (value === undefined) continue;
      for (const v of Array.isArray(value) ? value : [value]) block = Buffer.concat([block, literal(key, String(v))]);
    }
    // Past its deadline or cancelled: reset if its DATA still waits for window (lib/h2's endWith).
    const status = String(trailers["grpc-status"]);
    this.h2.endWith(block, this.headersSent ? undefined : headerBlock(headers), status === "1" || status === "4");
    this.headersSent = true;
  }
}

/** Response headers other than content-type (which lib/h2's fixed block carries) as literals, or undefined. */
function headerBlock(headers: Headers): Buffer | undefined {
  let block: Buffer | undefined;
  headers.forEach((value, key) => {
    if (key === "content-type") return;
    const field = literal(key, value);
    block = block ? Buffer.concat([block, field]) : field;
  });
  return block;
}

const stateOf = (call: Call) => call.state as LiteCall;

/** Header values interned at most (a full table is cleared and filled again), and the longest interned. */
const INTERNED_MAX = 1024;
const INTERNED_LENGTH = 64;
const interned = new Map<string, string>();

/**
 * One copy of a header value that most connections send alike (content-type, te, user-agent), not
 * one per call: a vehicle's Sync keeps its headers as long as its connection, ~40 B a value.
 */
function intern(value: string): string {
  if (value.length > INTERNED_LENGTH) return value;
  const known = interned.get(value);
  if (known !== undefined) return known;
  if (interned.size >= INTERNED_MAX) interned.clear();
  interned.set(value, value);
  return value;
}

/** One handler per method (its route in a closure made once), the call's state in `call.state`. */
function methodHandler(route: NativeMethod, path: string, native: NativeGrpc, mainUrl: string): GrpcHandler {
  const { method } = route;
  const lite: LiteMethod = {
    decode: route.decode ?? ((buf, start, end) => fromBinary(method.input, buf.subarray(start, end))),
    schema: method.output,
    encode: route.encode,
    maxBytes: native.maxMessageBytes,
  };
  // The URL of the last authority seen: one string for the calls of every vehicle that names the same host.
  let lastAuthority: string | undefined;
  let lastUrl = "";
  return {
    onOpen(call, fields) {
      // No prototype (as node:http2's headers): a field named `constructor` or `__proto__` is data.
      // Without the pseudo-headers, which the call's Headers never show and lib/h2 checked: the
      // object lives as long as the call (a vehicle's Sync: its connection), and the URL is made
      // here, of the route's own path string.
      const headers: Record<string, string | string[]> = Object.create(null);
      let authority = "localhost";
      for (let i = 0; i < fields.length; i += 2) {
        const name = fields[i]!;
        const value = fields[i + 1]!;
        if (name.charCodeAt(0) === 58) {
          if (name === ":authority") authority = value;
          continue;
        }
        const had = headers[name];
        const v = name === "authorization" ? value : intern(value);
        headers[name] = had === undefined ? v : Array.isArray(had) ? [...had, v] : [had, v];
      }
      const type = headers["content-type"];
      if (typeof type !== "string" || !GRPC_CONTENT_TYPES.has(type)) {
        call.end(Code.Unimplemented, `content-type ${String(type)} is not served on the vehicle port: call ${mainUrl}`);
        return;
      }
      const state = new LiteCall(call, lite);
      call.state = state;
      const values = Object.create(contextValuesPrototype) as ContextValues;
      if (authority !== lastAuthority) {
        lastAuthority = authority;
        lastUrl = `http://${authority}${path}`;
      }
      state.native = new NativeCall(route, headers, values, call.conn, state, state, lastUrl);
      void native.execute(state.native);
    },
    onMessage(call, buf, start, end) {
      stateOf(call)?.onMessage(buf, start, end);
    },
    onInvalid(call, problem, length) {
      const lite = stateOf(call);
      if (lite) lite.onInvalid(problem, length);
      else call.end(Code.InvalidArgument, "protocol error: bad message framing");
    },
    onHalfClose(call) {
      stateOf(call)?.onHalfClose();
    },
    onCancel(call) {
      const lite = stateOf(call);
      if (!lite) return;
      lite.native?.gone();
      lite.wake();
    },
    onDrain(call) {
      stateOf(call)?.wake();
    },
  };
}

/** Starts the listener; rejects when the port cannot be had (taken without reusePort). */
export async function serveLite({
  native,
  host,
  port,
  reusePort = false,
  tls,
  log,
  maxStreamsPerConnection,
  maxConnections,
  idleTimeoutMs,
  mainUrl,
  maxBufferedBytes,
  registry,
}: ServeLiteOptions): Promise<LiteServer> {
  const handlers = new Map<string, GrpcHandler>();
  const methodOf = (path: string) => {
    const route = native.methodAt(path);
    if (!route) return undefined;
    let h = handlers.get(path);
    if (!h) handlers.set(path, (h = methodHandler(route, path, native, mainUrl)));
    return h;
  };
  const server = new H2Server(methodOf, {
    maxConcurrentStreams: maxStreamsPerConnection,
    maxMessageBytes: native.maxMessageBytes,
    maxConnections,
    idleTimeoutMs: idleTimeoutMs * 2,
    maxBufferedBytes,
    onEvent(event, count) {
      if (event === "refused") {
        if (count % 1000 === 1) log.warn("connection refused: too many open", { port: "vehicle", maxConnections, refused: count });
      } else if (event === "flood")
        log.warn("connection ended: frame flood (GOAWAY ENHANCE_YOUR_CALM)", { port: "vehicle", frames: count });
      else log.info("connection cut: its client does not read", { port: "vehicle", unsentBytes: count });
    },
  });
  if (registry) {
    new Gauge({
      name: "vehicle_port_connections",
      help: "connections open on the vehicle port",
      registers: [registry],
      collect() {
        this.set(server.connections.size);
      },
    });
    new Counter({
      name: "vehicle_port_socket_writes_total",
      help: "socket writes of the vehicle port: all a connection's frames of one event-loop turn (acks of many streams) go in one",
      registers: [registry],
      collect() {
        this.reset();
        this.inc(server.writes);
      },
    });
  }
  server.unknownMethod = (path) => `${path.slice(0, 200)} is not served on the vehicle port: call it on the main port ${mainUrl}`;
  let listener: ReturnType<H2Server["listen"]>;
  try {
    listener = server.listen(host, port, tls, reusePort);
  } catch (err) {
    throw new Error(`vehicle port ${host}:${port}: cannot listen (${(err as Error).message}; taken by another process?)`, { cause: err });
  }
  const bound = listener.port;
  const hostPart = host.includes(":") ? `[${host}]` : host;
  const url = `${tls ? "https" : "http"}://${hostPart}:${bound}`;
  let stopped = false;
  return {
    url,
    port: bound,
    async stopAccepting() {
      if (stopped) return;
      stopped = true;
      server.stopAccepting();
    },
    settled: (timeoutMs) => server.settled(timeoutMs),
    async close() {
      stopped = true;
      server.close();
    },
  };
}
