/**
 * Native gRPC for hot streams: client-streaming, bidi and server-streaming calls of chosen methods, over
 * HTTP/2 with `application/grpc` or `application/grpc+proto`, are served here on the raw
 * `Http2Stream` instead of through connect-node's adapter. Everything else (Connect, gRPC-Web,
 * unary calls, HTTP/1.1, other methods) stays on connect.
 *
 * Why: a vehicle sends one small message per point. connect-es runs every message through a chain
 * of async iterables (envelope split, parse, interceptor wrappers) over Node stream events, which
 * cost most of the gateway's ~40 µs of CPU per point on the reference box. Here a message is one
 * 'data' event, a 5-byte prefix, `fromBinary` and a synchronous call into the handler.
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
  type DescMethodStreaming,
  type Message,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createHandlerContext,
  type ContextValues,
  type HandlerContext,
  type Interceptor,
  type StreamRequest,
  type StreamResponse,
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

/** A method served natively; build it with `nativeClientStream`, `nativeBidiStream` or `nativeServerStream`. */
export interface NativeStream {
  readonly method: DescMethodStreaming;
  /** Decodes one request message (default: protobuf-es `fromBinary`); must throw what fromBinary throws on bad bytes. */
  readonly decode?: MessageDecoder<Message>;
  /** Runs the handler; resolves to its response messages (one for a client stream). */
  invoke(input: AnyInput, ctx: HandlerContext): Promise<AsyncIterable<MessageInitShape<DescMessage>>>;
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
): NativeStream {
  return {
    method,
    decode,
    invoke: async (input, ctx) => one(await handler(input as unknown as MessageInput<MessageShape<I>>, ctx)) as AsyncIterable<MessageInitShape<DescMessage>>,
  };
}

/** A bidi method served natively: the handler yields its responses. */
export function nativeBidiStream<I extends DescMessage, O extends DescMessage>(
  method: DescMethodBiDiStreaming<I, O>,
  handler: (input: MessageInput<MessageShape<I>>, ctx: HandlerContext) => AsyncIterable<MessageInitShape<O>>,
  decode?: MessageDecoder<MessageShape<I>>,
): NativeStream {
  return {
    method,
    decode,
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
): NativeStream {
  return {
    method,
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

/** gRPC's timeout header, as connect parses it. */
function parseGrpcTimeout(value: string | undefined): { timeoutMs?: number; error?: ConnectError } {
  if (value === undefined) return {};
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (!m) return { error: new ConnectError(`protocol error: invalid grpc timeout value: ${value}`, Code.InvalidArgument) };
  const unit = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 }[m[2] as "H"];
  return { timeoutMs: unit * Number(m[1]) };
}

const COMPRESSED = 0b1;

/**
 * The request side of one native call: reassembles length-prefixed messages across DATA chunks,
 * enforces the size limit and refuses compressed messages before buffering them, and pushes each
 * decoded message to the sink while not paused.
 */
class FramedInput implements AnyInput {
  private sink: MessageSink<Message> | undefined;
  /** Bytes received and not yet delivered (a partial message, or messages held while paused). */
  private pending: Buffer | undefined;
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
    this.stream.on("data", this.onData);
    this.stream.once("end", this.onEnd);
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
    this.pending = undefined;
  }

  /** Fails the stream (protocol error, reset, deadline); before `start`, the handler gets it on start. */
  fail(err: unknown): void {
    if (this.stopped || this.done) return;
    if (!this.sink) {
      this.failure ??= err;
      return;
    }
    this.done = true;
    this.pending = undefined;
    this.sink.error(err);
  }

  private onData = (chunk: Buffer) => {
    if (this.stopped || this.done) return;
    const held = this.pending;
    if (!held) {
      this.pending = chunk;
      return this.pump();
    }
    // A message began in an earlier chunk: complete it with only the bytes it still needs, so
    // that a large chunk of many messages is not copied whole.
    if (!this.paused && held.length >= 5) {
      const need = 5 + held.readUInt32BE(1) - held.length;
      if (need > 0 && need < chunk.length) {
        this.pending = Buffer.concat([held, chunk.subarray(0, need)]);
        this.pump();
        if (this.stopped || this.done) return;
        const rest = chunk.subarray(need);
        this.pending = this.pending ? Buffer.concat([this.pending, rest]) : rest;
        return this.pump();
      }
    }
    this.pending = Buffer.concat([held, chunk]);
    this.pump();
  };

  private onEnd = () => {
    // Bun ends the inbound side before it reports a client's RST_STREAM ('aborted'): wait a
    // turn, so that a cancelled call fails as cancelled instead of ending as a half-close.
    setImmediate(() => {
      this.ended = true;
      if (!this.stopped && !this.done && !this.stream.aborted) this.pump();
    });
  };

  /** Delivers what `pending` holds, until it is empty or the handler pauses or stops. */
  private pump(): void {
    this.pumping = true;
    try {
      this.deliver();
    } finally {
      this.pumping = false;
    }
  }

  private deliver(): void {
    const buf = this.pending;
    let off = 0;
    if (buf) {
      while (!this.paused && !this.stopped && !this.done && buf.length - off >= 5) {
        const len = buf.readUInt32BE(off + 1);
        if ((buf[off]! & COMPRESSED) !== 0) {
          return this.fail(new ConnectError("received compressed envelope, but do not know how to decompress", Code.Internal));
        }
        if (len > this.maxBytes) {
          return this.fail(new ConnectError(`message size ${len} is larger than configured readMaxBytes ${this.maxBytes}`, Code.ResourceExhausted));
        }
        if (buf.length - off - 5 < len) break;
        let message: Message;
        try {
          message = this.decode(buf, off + 5, off + 5 + len);
        } catch (err) {
          return this.fail(new ConnectError(`parse binary: ${(err as Error).message}`, Code.InvalidArgument));
        }
        off += 5 + len;
        this.sink!.message(message);
      }
      if (this.stopped || this.done) return;
      this.pending = off === buf.length ? undefined : off === 0 ? buf : buf.subarray(off);
    }
    if (this.ended && !this.paused) {
      if (this.pending) return this.fail(new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument));
      this.done = true;
      this.sink!.end();
    }
  }
}

/** Headers as the plain object node:http2 takes, without HTTP/2 pseudo-headers. */
function headersObject(into: http2.OutgoingHttpHeaders, headers: Headers): http2.OutgoingHttpHeaders {
  headers.forEach((value, key) => {
    into[key] = value;
  });
  return into;
}

/** Bytes written and not yet flushed past which a native call's handler waits (see `writable`). */
const WRITE_HIGH_WATER = 64 * 1024;

/** The response side of one native call: headers on the first message, then trailers (or trailers only). */
class FramedOutput {
  private headersSent = false;
  /**
   * Counted through write callbacks, which Bun calls once the bytes went out: its write() keeps
   * returning true for a client that stopped reading, so it cannot tell the handler to wait.
   */
  private unflushed = 0;
  private waiter: (() => void) | undefined;

  constructor(
    private readonly stream: http2.ServerHttp2Stream,
    private readonly schema: DescMessage,
    private readonly maxBytes: number,
  ) {}

  private get gone(): boolean {
    return this.stream.closed || this.stream.destroyed;
  }

  message(init: MessageInitShape<DescMessage>, headers: Headers): void {
    const bytes = toBinary(this.schema, create(this.schema, init));
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
    const size = frame.length;
    this.unflushed += size;
    this.stream.write(frame, () => {
      this.unflushed -= size;
      if (this.unflushed < WRITE_HIGH_WATER) this.wake();
    });
  }

  /** Resolves once the client took enough of what was written (or the stream is gone). */
  writable(): Promise<void> | undefined {
    if (this.unflushed < WRITE_HIGH_WATER || this.gone) return undefined;
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

/** Iterating it is a mistake: a native call's messages reach the handler through its MessageInput. */
const unreadable: AsyncIterable<never> = {
  [Symbol.asyncIterator]() {
    throw new Error("messages of a native gRPC stream are read through its MessageInput, not the request's AsyncIterable");
  },
};

export interface NativeGrpcOptions {
  streams: NativeStream[];
  /** The same interceptors as connect's adapter, outermost first. */
  interceptors: Interceptor[];
  contextValues?: (req: http2.Http2ServerRequest) => ContextValues;
  /** Largest message in either direction; larger is RESOURCE_EXHAUSTED naming the limit. */
  maxMessageBytes: number;
}

export interface NativeGrpc {
  /** Serves the request and returns true when it is a native method called over gRPC on HTTP/2; false leaves it to connect. */
  handle(req: http.IncomingMessage | http2.Http2ServerRequest): boolean;
}

const GRPC_CONTENT_TYPES = new Set(["application/grpc", "application/grpc+proto"]);

/** Creates the native gRPC path for `streams`. */
export function createNativeGrpc({ streams, interceptors, contextValues, maxMessageBytes }: NativeGrpcOptions): NativeGrpc {
  const byPath = new Map(streams.map((s) => [`/${s.method.parent.typeName}/${s.method.name}`, s]));

  const run = async (route: NativeStream, req: http2.Http2ServerRequest) => {
    const { method } = route;
    const service = method.parent;
    const stream = req.stream;
    const raw = req.headers;
    const requestHeader = new Headers();
    for (const key in raw) {
      const value = raw[key];
      if (key.startsWith(":") || value === undefined) continue;
      if (Array.isArray(value)) for (const v of value) requestHeader.append(key, v);
      else requestHeader.set(key, value);
    }
    const timeout = parseGrpcTimeout(requestHeader.get("grpc-timeout") ?? undefined);
    const clientGone = new AbortController();
    const ctx = createHandlerContext({
      service,
      method,
      protocolName: "grpc",
      requestMethod: "POST",
      url: `http://${raw[":authority"] ?? "localhost"}${req.url}`,
      timeoutMs: timeout.timeoutMs,
      requestSignal: clientGone.signal,
      requestHeader,
      responseHeader: { "content-type": "application/grpc+proto" },
      responseTrailer: { "grpc-status": "0" },
      contextValues: contextValues?.(req),
    });
    const input = new FramedInput(stream, route.decode ?? ((buf, start, end) => fromBinary(method.input, buf.subarray(start, end))), maxMessageBytes);
    const output = new FramedOutput(stream, method.output, maxMessageBytes);
    // As in connect, protocol errors reach the handler when it reads, inside the interceptors.
    const encoding = requestHeader.get("grpc-encoding");
    if (encoding !== null && encoding !== "identity") {
      input.fail(new ConnectError(`unknown compression "${encoding}": supported encodings are identity`, Code.Unimplemented));
    }
    if (timeout.error) input.fail(timeout.error);
    let finished = false;
    stream.on("error", () => {
      // A reset or a cut connection; 'close' follows and fails the call.
    });
    // RST_STREAM from the client ('aborted', before the inbound side ends) or a cut connection.
    const gone = () => {
      if (!finished) clientGone.abort();
    };
    stream.once("aborted", gone);
    stream.once("close", gone);
    ctx.signal.addEventListener("abort", () => {
      const reason: unknown = ctx.signal.reason;
      input.fail(reason instanceof ConnectError ? reason : new Error("stream closed by the client before it half-closed"));
    });

    const invoke = async (r: StreamRequest): Promise<StreamResponse> => {
      const handlerCtx: HandlerContext = { ...ctx, service: r.service, requestHeader: r.header, signal: r.signal, values: r.contextValues };
      const message = await route.invoke(input, handlerCtx);
      return { stream: true, service, method, header: ctx.responseHeader, trailer: ctx.responseTrailer, message } as StreamResponse;
    };
    type Next = (r: StreamRequest) => Promise<StreamResponse>;
    // connect's applyInterceptors (not exported): the first interceptor is the outermost.
    const next = interceptors.reduceRight<Next>((inner, interceptor) => interceptor(inner as Parameters<Interceptor>[0]) as Next, invoke);
    try {
      const res = await next({
        stream: true,
        service,
        method,
        requestMethod: "POST",
        url: ctx.url,
        signal: ctx.signal,
        header: ctx.requestHeader,
        contextValues: ctx.values,
        message: unreadable,
      } as StreamRequest);
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
      finished = true;
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
      void run(route, req as http2.Http2ServerRequest);
      return true;
    },
  };
}
