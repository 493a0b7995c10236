/**
 * Native gRPC for hot methods: client-streaming, bidi, server-streaming and unary calls of chosen
 * methods, over HTTP/2 with `application/grpc` or `application/grpc+proto`, are served here on the
 * raw `Http2Stream` instead of through connect-node's adapter. Everything else (Connect, gRPC-Web,
 * HTTP/1.1, other methods) stays on connect.
 *
 * Why: a vehicle sends one small message per point. connect-es runs every message through a chain
 * of async iterables (envelope split, parse, interceptor wrappers) over Node stream events, which
 * cost most of the gateway's ~40 µs of CPU per point on the reference box. Here a message is one
 * 'data' event, a 5-byte prefix, `fromBinary` and a synchronous call into the handler. A unary
 * call through connect-node on Bun cost ~0.3 ms of CPU on each side (its Headers, AbortControllers
 * and stream plumbing), ten times a bare node:http2 exchange: most of a Nearby query's latency.
 *
 * Per call, not per message, it stays connect: the same interceptors (auth, logging, metrics,
 * error mapping) run around the handler with a connect `HandlerContext`, errors become trailers
 * the way connect writes them, and `grpc-timeout` becomes the context's deadline.
 *
 * Handlers read a `MessageInput` (pushed messages, with pause/resume so that HTTP/2 flow control
 * holds a fast sender back) instead of an `AsyncIterable`; `iterableInput()` adapts connect's
 * AsyncIterable to the same interface, so one handler serves both paths.
 */
import type http from "node:http";
import type http2 from "node:http2";
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type DescMethodBiDiStreaming,
  type DescMethodClientStreaming,
  type DescMethodServerStreaming,
  type DescMethod,
  type DescMethodStreaming,
  type DescMethodUnary,
  type DescService,
  type Message,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextKey,
  type ContextKey,
  type ContextValues,
  type HandlerContext,
  type Interceptor,
  type ServiceImpl,
  type StreamRequest,
  type StreamResponse,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";

/** Receives the messages of a request stream, in order; then exactly one of `end` or `error`. */
export interface MessageSink<T> {
  message(message: T): void;
  /** The client half-closed after its last message. */
  end(): void;
  /** The stream failed: malformed or oversized message, reset by the client, deadline passed. */
  error(err: unknown): void;
}

/**
 * A request stream that pushes its messages to the handler. While paused, nothing is read, so
 * the client's HTTP/2 flow-control window fills and its writes stop completing.
 */
export interface MessageInput<T> {
  /** Starts delivery (once). */
  start(sink: MessageSink<T>): void;
  /** No more messages until `resume()`. May be called before `start`. */
  pause(): void;
  resume(): void;
  /** The handler is done reading (drain, idle, fatal message): nothing more is delivered. */
  stop(): void;
}

/** A MessageInput over an AsyncIterable: what connect hands a streaming handler. */
export function iterableInput<T>(messages: AsyncIterable<T>): MessageInput<T> {
  let paused = false;
  let stopped = false;
  let wake: (() => void) | undefined;
  const wakeUp = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  return {
    start(sink) {
      const it = messages[Symbol.asyncIterator]();
      (async () => {
        for (;;) {
          while (paused && !stopped) await new Promise<void>((resolve) => (wake = resolve));
          if (stopped) return;
          const r = await it.next();
          if (stopped) return;
          if (r.done) return sink.end();
          sink.message(r.value);
        }
      })().catch((err: unknown) => {
        if (!stopped) sink.error(err);
      });
    },
    pause() {
      paused = true;
    },
    resume() {
      paused = false;
      wakeUp();
    },
    stop() {
      stopped = true;
      wakeUp();
    },
  };
}

type AnyInput = MessageInput<Message>;

/**
 * Decodes the message at `buf[start, end)`. Offsets, not a view: making a view of a fresh Buffer
 * (`subarray`, or `.buffer` which materializes its ArrayBuffer) costs more than decoding a point.
 */
export type MessageDecoder<T> = (buf: Buffer, start: number, end: number) => T;

/**
 * Encodes a response message the handler yielded. The bytes are copied into their frame at once,
 * so an encoder may return a view of a buffer it reuses.
 */
export type MessageEncoder<T> = (message: T) => Uint8Array;

/** A method served natively; build it with `nativeClientStream`, `nativeBidiStream` or `nativeServerStream`. */
export interface NativeStream {
  readonly method: DescMethodStreaming;
  /** Decodes one request message (default: protobuf-es `fromBinary`); must throw what fromBinary throws on bad bytes. */
  readonly decode?: MessageDecoder<Message>;
  /** Encodes one response message (default: protobuf-es `toBinary`); must write exactly what toBinary writes. */
  readonly encode?: MessageEncoder<Message>;
  /** Bytes written and not yet flushed past which the handler waits (default WRITE_HIGH_WATER). */
  readonly writeHighWaterBytes?: number;
  /** Runs the handler; resolves to its response messages (one for a client stream). */
  invoke(input: AnyInput, ctx: HandlerContext): Promise<AsyncIterable<MessageInitShape<DescMessage>>>;
}

/** A unary method served natively; build them with `nativeUnaryMethods`. */
export interface NativeUnary {
  readonly method: DescMethodUnary;
  readonly decode?: MessageDecoder<Message>;
  readonly encode?: MessageEncoder<Message>;
  /** Runs the handler on the request message. */
  handle(request: Message, ctx: HandlerContext): Promise<MessageInitShape<DescMessage>>;
}

/** A method served natively. */
export type NativeMethod = NativeStream | NativeUnary;

const isUnary = (route: NativeMethod): route is NativeUnary => route.method.methodKind === "unary";

/**
 * Every unary method of `service` that `impl` implements, served natively with the same handler;
 * `encoders` writes a method's responses instead of protobuf-es (exactly what toBinary writes).
 */
export function nativeUnaryMethods<S extends DescService>(
  service: S,
  impl: Partial<ServiceImpl<S>>,
  encoders: Partial<Record<keyof ServiceImpl<S>, MessageEncoder<Message>>> = {},
): NativeUnary[] {
  const handlers = impl as unknown as Record<string, ((req: Message, ctx: HandlerContext) => Promise<MessageInitShape<DescMessage>>) | undefined>;
  const out: NativeUnary[] = [];
  for (const method of service.methods) {
    const handler = handlers[method.localName];
    if (method.methodKind !== "unary" || !handler) continue;
    const encode = (encoders as Record<string, MessageEncoder<Message> | undefined>)[method.localName];
    out.push({ method: method as DescMethodUnary, encode, handle: (request, ctx) => handler.call(impl, request, ctx) });
  }
  return out;
}

async function* one<T>(message: T): AsyncIterable<T> {
  yield message;
}

/**
 * A client-streaming method served natively. Like connect, the handler runs to its end inside the
 * interceptors, and its response is the single message of the response stream.
 */
export function nativeClientStream<I extends DescMessage, O extends DescMessage>(
  method: DescMethodClientStreaming<I, O>,
  handler: (input: MessageInput<MessageShape<I>>, ctx: HandlerContext) => Promise<MessageInitShape<O>>,
  decode?: MessageDecoder<MessageShape<I>>,
  encode?: MessageEncoder<MessageShape<O>>,
): NativeStream {
  return {
    method,
    decode,
    encode: encode as MessageEncoder<Message> | undefined,
    invoke: async (input, ctx) => one(await handler(input as unknown as MessageInput<MessageShape<I>>, ctx)) as AsyncIterable<MessageInitShape<DescMessage>>,
  };
}

/** A bidi method served natively: the handler yields its responses. */
export function nativeBidiStream<I extends DescMessage, O extends DescMessage>(
  method: DescMethodBiDiStreaming<I, O>,
  handler: (input: MessageInput<MessageShape<I>>, ctx: HandlerContext) => AsyncIterable<MessageInitShape<O>>,
  decode?: MessageDecoder<MessageShape<I>>,
  encode?: MessageEncoder<MessageShape<O>>,
): NativeStream {
  return {
    method,
    decode,
    encode: encode as MessageEncoder<Message> | undefined,
    invoke: async (input, ctx) => handler(input as unknown as MessageInput<MessageShape<I>>, ctx) as AsyncIterable<MessageInitShape<DescMessage>>,
  };
}

/** Reads the one request message of a server-streaming call. */
function single<T>(input: MessageInput<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    let got: T | undefined;
    let count = 0;
    input.start({
      message(m) {
        got = m;
        count++;
      },
      end() {
        if (count === 1) resolve(got!);
        else reject(new ConnectError(`protocol error: expected one request message, got ${count}`, Code.InvalidArgument));
      },
      error: reject,
    });
  });
}

/**
 * A server-streaming method served natively: one request message, then the handler yields its
 * responses. For streams of many small messages (watches), where connect's per-message pipeline
 * of async iterables is most of the cost.
 */
export function nativeServerStream<I extends DescMessage, O extends DescMessage>(
  method: DescMethodServerStreaming<I, O>,
  handler: (request: MessageShape<I>, ctx: HandlerContext) => AsyncIterable<MessageInitShape<O>>,
  { encode, writeHighWaterBytes }: { encode?: MessageEncoder<MessageShape<O>>; writeHighWaterBytes?: number } = {},
): NativeStream {
  return {
    method,
    encode: encode as MessageEncoder<Message> | undefined,
    writeHighWaterBytes,
    invoke: async (input, ctx) => handler((await single(input)) as unknown as MessageShape<I>, ctx) as AsyncIterable<MessageInitShape<DescMessage>>,
  };
}

/** Percent-encodes a grpc-message as the gRPC spec says: only bytes outside 0x20-0x7E, and '%'. */
export function grpcMessageEncode(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/**
 * The longest deadline a call gets. Timers hold a signed 32-bit count of milliseconds: a longer
 * delay (grpc-go sends `2592000S`, 30 days, for "no deadline") fires at once, which failed such
 * calls with DEADLINE_EXCEEDED at their start. Longer deadlines are clamped to this (~24.8 days).
 */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

const GRPC_TIMEOUT_UNITS_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/** gRPC's timeout header, as connect parses it, clamped to MAX_TIMEOUT_MS. */
function parseGrpcTimeout(value: string | undefined): { timeoutMs?: number; error?: ConnectError } {
  if (value === undefined) return {};
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (!m) return { error: new ConnectError(`protocol error: invalid grpc timeout value: ${value}`, Code.InvalidArgument) };
  return { timeoutMs: Math.min(GRPC_TIMEOUT_UNITS_MS[m[2]!]! * Number(m[1]), MAX_TIMEOUT_MS) };
}

/**
 * Rewrites a request's `grpc-timeout` or `connect-timeout-ms` past MAX_TIMEOUT_MS to that bound,
 * before connect-node sees it (it would arm a timer that fires at once).
 */
export function clampTimeoutHeaders(headers: Record<string, string | string[] | undefined>): void {
  const grpc = headers["grpc-timeout"];
  if (typeof grpc === "string") {
    const m = /^(\d{1,8})([HMSmun])$/.exec(grpc);
    if (m && GRPC_TIMEOUT_UNITS_MS[m[2]!]! * Number(m[1]) > MAX_TIMEOUT_MS) headers["grpc-timeout"] = `${Math.floor(MAX_TIMEOUT_MS / 1000)}S`;
  }
  const connect = headers["connect-timeout-ms"];
  if (typeof connect === "string" && /^\d{1,10}$/.test(connect) && Number(connect) > MAX_TIMEOUT_MS) headers["connect-timeout-ms"] = String(MAX_TIMEOUT_MS);
}

const COMPRESSED = 0b1;

/**
 * The request side of one native call: reassembles length-prefixed messages across DATA chunks,
 * enforces the size limit and refuses compressed messages before buffering them, and pushes each
 * decoded message to the sink while not paused.
 *
 * Chunks are kept in a list, as connect-es's envelope reader does, and a message is copied out once
 * when it is complete: concatenating the held bytes with each new chunk cost O(n²), and a client
 * sending 256 KiB in 1-byte DATA frames held the event loop for seconds. A message that lies in one
 * chunk (the usual case) is decoded in place, with no copy.
 */
class FramedInput implements AnyInput {
  private sink: MessageSink<Message> | undefined;
  /** Bytes received and not yet delivered (a partial message, or messages held while paused). */
  private chunks: Buffer[] = [];
  /** Index of the first chunk still held, and how far into it delivery got. */
  private head = 0;
  private offset = 0;
  /** Bytes held in `chunks` past `offset`. */
  private queued = 0;
  private paused = false;
  private stopped = false;
  /** The client half-closed. */
  private ended = false;
  /** end or error was delivered. */
  private done = false;
  /** A protocol error found before the handler started reading. */
  private failure: unknown;
  /** Inside pump(): a resume() from a handler must not start a second, nested one. */
  private pumping = false;

  constructor(
    private readonly stream: http2.ServerHttp2Stream,
    private readonly decode: MessageDecoder<Message>,
    private readonly maxBytes: number,
  ) {}

  start(sink: MessageSink<Message>): void {
    this.sink = sink;
    if (this.failure !== undefined) return this.fail(this.failure);
    if (this.paused) this.stream.pause();
    // Module-level listeners that find this input through the stream: no closures per call.
    this.stream.on("data", onStreamData);
    this.stream.on("end", onStreamEnd);
  }

  pause(): void {
    if (this.paused) return;
    this.paused = true;
    if (this.sink) this.stream.pause();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (!this.sink || this.stopped || this.done) return;
    // Resumed from inside a delivery, the running pump goes on by itself.
    if (!this.pumping) this.pump();
    if (!this.paused) this.stream.resume();
  }

  stop(): void {
    this.stopped = true;
    this.clear();
  }

  /** Fails the stream (protocol error, reset, deadline); before `start`, the handler gets it on start. */
  fail(err: unknown): void {
    if (this.stopped || this.done) return;
    if (!this.sink) {
      this.failure ??= err;
      return;
    }
    this.done = true;
    this.clear();
    this.sink.error(err);
  }

  onData(chunk: Buffer): void {
    if (this.stopped || this.done || chunk.length === 0) return;
    this.chunks.push(chunk);
    this.queued += chunk.length;
    this.pump();
  }

  onEnd(): void {
    // Bun ends the inbound side before it reports a client's RST_STREAM ('aborted'): wait a
    // turn, so that a cancelled call fails as cancelled instead of ending as a half-close.
    setImmediate(() => {
      this.ended = true;
      if (!this.stopped && !this.done && !this.stream.aborted) this.pump();
    });
  }

  private clear(): void {
    this.chunks = [];
    this.head = 0;
    this.offset = 0;
    this.queued = 0;
  }

  /** Drops `n` held bytes from the front. */
  private consume(n: number): void {
    this.queued -= n;
    while (n > 0) {
      const left = this.chunks[this.head]!.length - this.offset;
      if (n < left) {
        this.offset += n;
        return;
      }
      n -= left;
      this.head++;
      this.offset = 0;
    }
    if (this.head === this.chunks.length) {
      this.chunks = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
  }

  /** Copies the first `n` held bytes into one buffer; `drop` also consumes them. */
  private copy(n: number, drop: boolean): Buffer {
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    let i = this.head;
    let from = this.offset;
    while (at < n) {
      const c = this.chunks[i++]!;
      const take = Math.min(n - at, c.length - from);
      c.copy(out, at, from, from + take);
      at += take;
      from = 0;
    }
    if (drop) this.consume(n);
    return out;
  }

  /** Delivers what is held, until it is empty or the handler pauses or stops. */
  private pump(): void {
    this.pumping = true;
    try {
      this.deliver();
    } finally {
      this.pumping = false;
    }
  }

  private deliver(): void {
    while (!this.paused && !this.stopped && !this.done && this.queued >= 5) {
      let first = this.chunks[this.head]!;
      let at = this.offset;
      if (first.length - at < 5) {
        first = this.copy(5, false);
        at = 0;
      }
      const flags = first[at]!;
      const len = first.readUInt32BE(at + 1);
      if ((flags & COMPRESSED) !== 0) {
        return this.fail(new ConnectError("received compressed envelope, but do not know how to decompress", Code.Internal));
      }
      if (len > this.maxBytes) {
        return this.fail(new ConnectError(tooLargeMessage(len, this.maxBytes), Code.ResourceExhausted));
      }
      if (this.queued - 5 < len) break;
      let buf = this.chunks[this.head]!;
      let start = this.offset + 5;
      if (buf.length - this.offset >= 5 + len) this.consume(5 + len);
      else {
        buf = this.copy(5 + len, true);
        start = 5;
      }
      let message: Message;
      try {
        message = this.decode(buf, start, start + len);
      } catch (err) {
        return this.fail(new ConnectError(`parse binary: ${(err as Error).message}`, Code.InvalidArgument));
      }
      this.sink!.message(message);
    }
    if (this.stopped || this.done) return;
    if (this.ended && !this.paused) {
      if (this.queued > 0) return this.fail(new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument));
      this.done = true;
      this.sink!.end();
    }
  }
}

type RawHeaders = Readonly<Record<string, string | string[] | undefined>>;

/**
 * A `Headers` read from a plain header object until someone changes it. A native call holds three
 * (request, response, trailer) for its whole life; as WebCore `Headers` they cost ~1 KB of memory
 * per open stream, as this they cost one small object over the header object node:http2 already has.
 * Pseudo-headers (`:path`, …) are not headers and are never shown.
 */
class LazyHeaders implements Headers {
  private real: Headers | undefined;

  constructor(private readonly raw: RawHeaders) {}

  /** A real Headers, made on the first change. */
  private materialize(): Headers {
    if (!this.real) {
      const real = new Headers();
      this.eachRaw((value, key) => real.append(key, value));
      this.real = real;
    }
    return this.real;
  }

  private eachRaw(fn: (value: string, key: string) => void): void {
    for (const key in this.raw) {
      const value = this.raw[key];
      if (key.startsWith(":") || value === undefined) continue;
      fn(Array.isArray(value) ? value.join(", ") : value, key);
    }
  }

  get(name: string): string | null {
    if (this.real) return this.real.get(name);
    const key = name.toLowerCase();
    const value = key.startsWith(":") ? undefined : this.raw[key];
    if (value === undefined) return null;
    return Array.isArray(value) ? value.join(", ") : value;
  }
  has(name: string): boolean {
    return this.get(name) !== null;
  }
  set(name: string, value: string): void {
    this.materialize().set(name, value);
  }
  append(name: string, value: string): void {
    this.materialize().append(name, value);
  }
  delete(name: string): void {
    this.materialize().delete(name);
  }
  getSetCookie(): string[] {
    return this.materialize().getSetCookie();
  }
  getAll(name: "set-cookie" | "Set-Cookie"): string[] {
    return this.getSetCookie().filter(() => name.toLowerCase() === "set-cookie");
  }
  get count(): number {
    return this.materialize().count;
  }
  toJSON(): Record<string, string> {
    return this.materialize().toJSON();
  }
  forEach(fn: (value: string, key: string, parent: Headers) => void, thisArg?: unknown): void {
    if (this.real) return this.real.forEach(fn, thisArg);
    this.eachRaw((value, key) => fn.call(thisArg, value, key, this));
  }
  // Iteration (not in TypeScript's DOM lib without DOM.Iterable, but there at run time).
  entries(): IterableIterator<[string, string]> {
    return (this.materialize() as unknown as Iterable<[string, string]> & { entries(): IterableIterator<[string, string]> }).entries();
  }
  keys(): IterableIterator<string> {
    return (this.materialize() as unknown as { keys(): IterableIterator<string> }).keys();
  }
  values(): IterableIterator<string> {
    return (this.materialize() as unknown as { values(): IterableIterator<string> }).values();
  }
  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.entries();
  }
}

const RESPONSE_HEADER: RawHeaders = Object.freeze({ "content-type": "application/grpc+proto" });
const RESPONSE_TRAILER: RawHeaders = Object.freeze({ "grpc-status": "0" });

/** connect's ContextValues, with its methods on a prototype instead of three closures per call. */
const contextValuesPrototype: ContextValues = {
  get<T>(key: ContextKey<T>): T {
    return (key.id in this ? (this as unknown as Record<symbol, T>)[key.id] : key.defaultValue) as T;
  },
  set(key, value) {
    (this as unknown as Record<symbol, unknown>)[key.id] = value;
    return this;
  },
  delete(key) {
    delete (this as unknown as Record<symbol, unknown>)[key.id];
    return this;
  },
};

/**
 * The client connection a call came on, in its context's values: the HTTP/2 session (or the socket
 * of an HTTP/1.1 request, as serve.ts sets it on connect's path), for limits per connection. Set on
 * every native call (with no `contextValues`, which would turn the native path off).
 */
export const connectionKey = createContextKey<object | undefined>(undefined, { description: "client connection" });

/**
 * The HandlerContext of a native call. It behaves as connect's `createHandlerContext` (the signal
 * aborts on deadline, client gone or `abort()`), but makes its AbortController only when someone
 * reads `signal`: an AbortController with a listener costs ~0.8 KB per open stream, connect's
 * context holds three, and the ingest handlers never read one.
 */
class NativeContext implements HandlerContext {
  readonly protocolName = "grpc";
  readonly requestMethod = "POST";
  readonly responseHeader: Headers = new LazyHeaders(RESPONSE_HEADER);
  readonly responseTrailer: Headers = new LazyHeaders(RESPONSE_TRAILER);
  private controller: AbortController | undefined;
  private aborted = false;
  private reason: unknown;
  private deadlineTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    readonly service: DescService,
    readonly method: DescMethod,
    readonly url: string,
    readonly requestHeader: Headers,
    readonly values: ContextValues,
    private readonly deadline: number | undefined,
    /** Fails the request stream when the call is aborted (deadline, client gone). */
    private readonly input: { fail(err: unknown): void },
  ) {
    if (deadline !== undefined) {
      const ms = deadline - Date.now();
      const expire = () => this.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
      if (ms <= 0) queueMicrotask(expire);
      else this.deadlineTimer = setTimeout(expire, ms);
    }
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.aborted) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  timeoutMs(): number | undefined {
    return this.deadline === undefined ? undefined : this.deadline - Date.now();
  }

  /** Without a reason: the call finished (its input is already stopped), so no error is made unless a signal was handed out. */
  abort(reason?: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    clearTimeout(this.deadlineTimer);
    if (reason === undefined && !this.controller) return;
    this.reason = reason ?? new ConnectError("operation was aborted via signal", Code.Canceled);
    this.controller?.abort(this.reason);
    this.input.fail(this.reason instanceof ConnectError ? this.reason : new Error("stream closed by the client before it half-closed"));
  }
}

/** Headers as the plain object node:http2 takes, without HTTP/2 pseudo-headers. */
function headersObject(into: http2.OutgoingHttpHeaders, headers: Headers): http2.OutgoingHttpHeaders {
  headers.forEach((value, key) => {
    into[key] = value;
  });
  return into;
}

/** What a client hears when its request message is over the limit, on every protocol the port speaks. */
export function tooLargeMessage(bytes: number, limit: number): string {
  return `message of ${bytes} bytes is over this server's limit of ${limit} bytes: send smaller messages (fewer points in each)`;
}

/** Bytes written and not yet flushed past which a native call's handler waits (see `writable`). */
const WRITE_HIGH_WATER = 64 * 1024;

/** The response side of one native call: headers on the first message, then trailers (or trailers only). */
class FramedOutput {
  private headersSent = false;
  /**
   * Unflushed bytes are counted through write callbacks, which Bun calls once the bytes went out:
   * its write() keeps returning true for a client that stopped reading, so it cannot tell the
   * handler to wait. A callback per write cost the gateway's acks ~5 ms of p99; callbacks come in
   * write order, so one every `highWater / 4` bytes (and on the write that reaches the high-water
   * mark, which is the one a waiting handler needs) says as much, overstating by at most that.
   */
  private written = 0;
  private flushed = 0;
  private trackedUpTo = 0;
  private waiter: (() => void) | undefined;

  constructor(
    private readonly stream: http2.ServerHttp2Stream,
    private readonly schema: DescMessage,
    private readonly maxBytes: number,
    private readonly encode: MessageEncoder<Message> | undefined,
    private readonly highWater = WRITE_HIGH_WATER,
  ) {}

  private get gone(): boolean {
    return this.stream.closed || this.stream.destroyed;
  }

  message(init: MessageInitShape<DescMessage>, headers: Headers): void {
    const bytes = this.encode ? this.encode(init as Message) : toBinary(this.schema, create(this.schema, init));
    if (bytes.length > this.maxBytes) {
      throw new ConnectError(`message size ${bytes.length} is larger than configured writeMaxBytes ${this.maxBytes}`, Code.ResourceExhausted);
    }
    if (this.gone) return;
    if (!this.headersSent) {
      this.headersSent = true;
      // node:http2's compatibility response (created for every stream) would send its own, empty,
      // trailers when the stream asks for them; this call sends its own.
      this.stream.removeAllListeners("wantTrailers");
      this.stream.respond(headersObject({ ":status": 200 }, headers), { waitForTrailers: true });
    }
    const frame = Buffer.allocUnsafe(5 + bytes.length);
    frame[0] = 0;
    frame.writeUInt32BE(bytes.length, 1);
    frame.set(bytes, 5);
    const end = (this.written += frame.length);
    if (end - this.trackedUpTo < this.highWater / 4 && end - this.flushed < this.highWater) {
      this.stream.write(frame);
      return;
    }
    this.trackedUpTo = end;
    this.stream.write(frame, () => {
      if (end > this.flushed) this.flushed = end;
      if (this.written - this.flushed < this.highWater) this.wake();
    });
  }

  /** Resolves once the client took enough of what was written (or the stream is gone). */
  writable(): Promise<void> | undefined {
    if (this.written - this.flushed < this.highWater || this.gone) return undefined;
    this.stream.once("close", this.wake);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  private wake = (): void => {
    const w = this.waiter;
    this.waiter = undefined;
    if (!w) return;
    this.stream.off("close", this.wake);
    w();
  };

  end(headers: Headers, trailers: http2.OutgoingHttpHeaders): void {
    if (this.gone) return;
    if (!this.headersSent) {
      // Trailers-only: status in the one HEADERS frame, which ends the stream.
      this.headersSent = true;
      this.stream.removeAllListeners("wantTrailers");
      this.stream.respond({ ...headersObject({ ":status": 200 }, headers), ...trailers }, { endStream: true });
      return;
    }
    this.stream.once("wantTrailers", () => {
      if (!this.gone) this.stream.sendTrailers(trailers);
    });
    this.stream.end();
  }
}

/** The trailers of a failed call, as connect writes them (status, encoded message, error metadata). */
function errorTrailers(err: ConnectError, trailer: Headers): http2.OutgoingHttpHeaders {
  const out = headersObject({}, trailer);
  out["grpc-status"] = String(err.code);
  out["grpc-message"] = grpcMessageEncode(err.rawMessage);
  err.metadata.forEach((value, key) => {
    out[key] = value;
  });
  return out;
}

/**
 * One native call: its context, both directions, and the request the interceptors see. The request
 * is also its `message`: an AsyncIterable that refuses to be read (a native call's messages reach
 * the handler through its MessageInput), and which carries the call to the innermost function of
 * the interceptor chain, so that the chain is built once per method instead of once per call.
 */
class NativeCall implements AsyncIterable<never> {
  readonly stream = true;
  readonly requestMethod = "POST";
  readonly ctx: NativeContext;
  readonly input: FramedInput;
  readonly output: FramedOutput;
  /** The handler's response is written (or failed); a later 'close' is not a cancellation. */
  finished = false;

  constructor(
    readonly route: NativeMethod,
    readonly raw: http2.ServerHttp2Stream,
    headers: RawHeaders,
    /** The compatibility request, made only when `contextValues` wants one. */
    req: http2.Http2ServerRequest | undefined,
    maxMessageBytes: number,
    contextValues: NativeGrpcOptions["contextValues"],
  ) {
    const { method } = route;
    const header = new LazyHeaders(headers);
    const timeout = parseGrpcTimeout(header.get("grpc-timeout") ?? undefined);
    this.input = new FramedInput(raw, route.decode ?? ((buf, start, end) => fromBinary(method.input, buf.subarray(start, end))), maxMessageBytes);
    this.output = new FramedOutput(raw, method.output, maxMessageBytes, route.encode, isUnary(route) ? undefined : route.writeHighWaterBytes);
    this.ctx = new NativeContext(
      method.parent,
      method,
      `http://${headers[":authority"] ?? "localhost"}${headers[":path"]}`,
      header,
      ((req && contextValues?.(req)) ?? (Object.create(contextValuesPrototype) as ContextValues)).set(connectionKey, raw.session),
      timeout.timeoutMs === undefined ? undefined : Date.now() + timeout.timeoutMs,
      this.input,
    );
    // As in connect, protocol errors reach the handler when it reads, inside the interceptors.
    const encoding = header.get("grpc-encoding");
    if (encoding !== null && encoding !== "identity") {
      this.input.fail(new ConnectError(`unknown compression "${encoding}": supported encodings are identity`, Code.Unimplemented));
    }
    if (timeout.error) this.input.fail(timeout.error);
  }

  // StreamRequest, as the interceptors see it.
  get service(): DescService {
    return this.ctx.service;
  }
  get method(): DescMethodStreaming {
    return this.ctx.method as DescMethodStreaming;
  }
  get url(): string {
    return this.ctx.url;
  }
  get signal(): AbortSignal {
    return this.ctx.signal;
  }
  get header(): Headers {
    return this.ctx.requestHeader;
  }
  get contextValues(): ContextValues {
    return this.ctx.values;
  }
  get message(): AsyncIterable<never> {
    return this;
  }

  [Symbol.asyncIterator](): AsyncIterator<never> {
    throw new Error("messages of a native gRPC stream are read through its MessageInput, not the request's AsyncIterable");
  }

  /** RST_STREAM from the client ('aborted', before the inbound side ends) or a cut connection. */
  gone(): void {
    if (!this.finished) this.ctx.abort(new ConnectError("the client closed the stream", Code.Canceled));
  }
}

/**
 * The request of a native unary call as the interceptors see it; it carries the call to the
 * innermost step. Its `message` is undefined while the interceptors run: the body is read only
 * once they passed the call on (see createNativeGrpc), so auth refuses a caller from its headers.
 */
class NativeUnaryRequest implements UnaryRequest {
  readonly stream = false;
  readonly requestMethod = "POST";
  readonly message = undefined as unknown as Message;

  constructor(readonly call: NativeCall) {}

  get service(): DescService {
    return this.call.ctx.service;
  }
  get method(): DescMethodUnary {
    return this.call.ctx.method as DescMethodUnary;
  }
  get url(): string {
    return this.call.ctx.url;
  }
  get signal(): AbortSignal {
    return this.call.ctx.signal;
  }
  get header(): Headers {
    return this.call.ctx.requestHeader;
  }
  get contextValues(): ContextValues {
    return this.call.ctx.values;
  }
}

const CALL = Symbol("native gRPC call");
type CallStream = http2.ServerHttp2Stream & { [CALL]?: NativeCall };

function onStreamData(this: CallStream, chunk: Buffer): void {
  this[CALL]?.input.onData(chunk);
}
function onStreamEnd(this: CallStream): void {
  this[CALL]?.input.onEnd();
}
function onStreamGone(this: CallStream): void {
  this[CALL]?.gone();
}
function ignoreStreamError(): void {
  // A reset or a cut connection; 'close' follows and fails the call.
}

export interface NativeGrpcOptions {
  methods: NativeMethod[];
  /** The same interceptors as connect's adapter, outermost first. */
  interceptors: Interceptor[];
  contextValues?: (req: http2.Http2ServerRequest) => ContextValues;
  /** Largest message in either direction; larger is RESOURCE_EXHAUSTED naming the limit. */
  maxMessageBytes: number;
  /** A unary call's request message must have arrived this long after its headers (or its own deadline, if sooner). */
  unaryBodyTimeoutMs?: number;
}

export interface NativeGrpc {
  /** Serves the request and returns true when it is a native method called over gRPC on HTTP/2; false leaves it to connect. */
  handle(req: http.IncomingMessage | http2.Http2ServerRequest): boolean;
  /**
   * The same for a bare HTTP/2 stream (the server's 'stream' event), before node:http2 made its
   * compatibility request and response for it; false leaves the stream to them. Always false when
   * `contextValues` is set, since that reads the compatibility request.
   */
  handleStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): boolean;
}

const GRPC_CONTENT_TYPES = new Set(["application/grpc", "application/grpc+proto"]);

/** The context a handler sees: the call's own, or one over the request an interceptor passed on instead (other headers or values). */
function handlerContext(ctx: NativeContext, r: StreamRequest | UnaryRequest, own: boolean): HandlerContext {
  return own
    ? ctx
    : {
        service: r.service,
        method: ctx.method,
        signal: r.signal,
        timeoutMs: () => ctx.timeoutMs(),
        requestMethod: ctx.requestMethod,
        requestHeader: r.header,
        responseHeader: ctx.responseHeader,
        responseTrailer: ctx.responseTrailer,
        protocolName: ctx.protocolName,
        values: r.contextValues,
        url: ctx.url,
      };
}

/** Creates the native gRPC path for `methods`. */
export function createNativeGrpc({ methods, interceptors, contextValues, maxMessageBytes, unaryBodyTimeoutMs = 10_000 }: NativeGrpcOptions): NativeGrpc {
  type Next = (r: StreamRequest) => Promise<StreamResponse>;
  type UnaryNext = (r: UnaryRequest) => Promise<UnaryResponse>;

  /** The innermost step of the interceptor chain: runs the handler of the call the request carries. */
  const invoke: Next = async (r) => {
    const call = r.message as unknown as NativeCall;
    const { ctx } = call;
    const message = await (call.route as NativeStream).invoke(call.input, handlerContext(ctx, r, r === (call as unknown as StreamRequest)));
    return { stream: true, service: ctx.service, method: ctx.method, header: ctx.responseHeader, trailer: ctx.responseTrailer, message } as StreamResponse;
  };
  /**
   * The request message of a unary call, read here, inside the interceptors (connect reads it
   * before them): a caller that auth refuses never gets its body buffered. A body that has not all
   * arrived within unaryBodyTimeoutMs (a client trickling bytes) ends the call.
   */
  const readUnary = async (call: NativeCall): Promise<Message> => {
    const timer = setTimeout(() => {
      call.input.fail(
        new ConnectError(`request message not received within ${unaryBodyTimeoutMs} ms of the headers: send the whole request at once`, Code.DeadlineExceeded),
      );
    }, unaryBodyTimeoutMs);
    try {
      return await single(call.input);
    } finally {
      clearTimeout(timer);
    }
  };
  const invokeUnary: UnaryNext = async (r) => {
    const { call } = r as NativeUnaryRequest;
    const { ctx } = call;
    const route = call.route as NativeUnary;
    const request = r.message ?? (await readUnary(call));
    const message = create(route.method.output, await route.handle(request, handlerContext(ctx, r, r instanceof NativeUnaryRequest)));
    return { stream: false, service: ctx.service, method: route.method, header: ctx.responseHeader, trailer: ctx.responseTrailer, message } as UnaryResponse;
  };
  // connect's applyInterceptors (not exported): the first interceptor is the outermost. Built once.
  const chain = interceptors.reduceRight<Next>((inner, interceptor) => interceptor(inner as Parameters<Interceptor>[0]) as Next, invoke);
  const unaryChain = interceptors.reduceRight<UnaryNext>((inner, interceptor) => interceptor(inner as Parameters<Interceptor>[0]) as UnaryNext, invokeUnary);
  const byPath = new Map(methods.map((s) => [`/${s.method.parent.typeName}/${s.method.name}`, s]));

  const run = async (route: NativeMethod, raw: http2.ServerHttp2Stream, headers: RawHeaders, req: http2.Http2ServerRequest | undefined) => {
    const stream = raw as CallStream;
    const call = new NativeCall(route, stream, headers, req, maxMessageBytes, contextValues);
    const { ctx, input, output } = call;
    stream[CALL] = call;
    stream.on("error", ignoreStreamError);
    // `on`, not `once` (which wraps each listener in a closure per call): gone() is idempotent.
    stream.on("aborted", onStreamGone);
    stream.on("close", onStreamGone);
    try {
      if (isUnary(route)) {
        const res = await unaryChain(new NativeUnaryRequest(call));
        output.message(res.message as MessageInitShape<DescMessage>, res.header);
        output.end(res.header, headersObject({}, res.trailer));
        return;
      }
      const res = await chain(call as unknown as StreamRequest);
      for await (const m of res.message) {
        output.message(m as MessageInitShape<DescMessage>, res.header);
        const wait = output.writable();
        if (wait) await wait;
      }
      output.end(res.header, headersObject({}, res.trailer));
    } catch (err) {
      const error = err instanceof ConnectError ? err : new ConnectError("internal error", Code.Internal, undefined, undefined, err);
      output.end(ctx.responseHeader, errorTrailers(error, ctx.responseTrailer));
    } finally {
      call.finished = true;
      input.stop();
      ctx.abort();
      // Whatever the client still sends is read and dropped, so its flow-control credit returns.
      stream.removeAllListeners("data");
      stream.resume();
    }
  };

  return {
    handle(req) {
      if (req.httpVersionMajor !== 2 || req.method !== "POST") return false;
      const route = byPath.get(req.url ?? "");
      if (!route) return false;
      const type = req.headers["content-type"];
      if (type === undefined || !GRPC_CONTENT_TYPES.has(type)) return false;
      const h2req = req as http2.Http2ServerRequest;
      void run(route, h2req.stream, h2req.headers, h2req);
      return true;
    },
    handleStream(stream, headers) {
      if (contextValues || headers[":method"] !== "POST") return false;
      const route = byPath.get(headers[":path"] ?? "");
      if (!route) return false;
      const type = headers["content-type"];
      if (type === undefined || !GRPC_CONTENT_TYPES.has(type)) return false;
      void run(route, stream, headers, undefined);
      return true;
    },
  };
}
