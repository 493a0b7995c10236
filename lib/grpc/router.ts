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
import { create, fromBinary, type DescMessage, type Message, type MessageInitShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  type Interceptor,
  type StreamRequest,
  type StreamResponse,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import { NativeCall, NativeUnaryRequest } from "./call";
import { contextValuesPrototype, handlerContext, type RawHeaders } from "./context";
import { FramedInput } from "./framed-input";
import { FramedOutput } from "./framed-output";
import { single } from "./input";
import { isUnary, type NativeMethod, type NativeStream, type NativeUnary } from "./methods";
import { errorTrailers, GRPC_CONTENT_TYPES, headersObject } from "./wire";

const CALL = Symbol("native gRPC call");
type CallStream = http2.ServerHttp2Stream & { [CALL]?: NativeCall };

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
  /** The native method served at `path` (`/package.Service/Method`), if any. */
  methodAt(path: string): NativeMethod | undefined;
  /**
   * Runs a call made by another transport (lib/grpc/serve-lite.ts on lib/h2) through the same
   * interceptors and handler; resolves once its response is written.
   */
  execute(call: NativeCall): Promise<void>;
  readonly maxMessageBytes: number;
  /** Serves the request and returns true when it is a native method called over gRPC on HTTP/2; false leaves it to connect. */
  handle(req: http.IncomingMessage | http2.Http2ServerRequest): boolean;
  /**
   * The same for a bare HTTP/2 stream (the server's 'stream' event), before node:http2 made its
   * compatibility request and response for it; false leaves the stream to them. Always false when
   * `contextValues` is set, since that reads the compatibility request.
   */
  handleStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): boolean;
}
/** Creates the native gRPC path for `methods`. */
export function createNativeGrpc({
  methods,
  interceptors,
  contextValues,
  maxMessageBytes,
  unaryBodyTimeoutMs = 10_000,
}: NativeGrpcOptions): NativeGrpc {
  type Next = (r: StreamRequest) => Promise<StreamResponse>;
  type UnaryNext = (r: UnaryRequest) => Promise<UnaryResponse>;

  /** The innermost step of the interceptor chain: runs the handler of the call the request carries. */
  const invoke: Next = async (r) => {
    const call = r.message as unknown as NativeCall;
    const { ctx } = call;
    const message = await (call.route as NativeStream).invoke(call.input, handlerContext(ctx, r, r === (call as unknown as StreamRequest)));
    return {
      stream: true,
      service: ctx.service,
      method: ctx.method,
      header: ctx.responseHeader,
      trailer: ctx.responseTrailer,
      message,
    } as StreamResponse;
  };
  /**
   * The request message of a unary call, read here, inside the interceptors (connect reads it
   * before them): a caller that auth refuses never gets its body buffered. A body that has not all
   * arrived within unaryBodyTimeoutMs (a client trickling bytes) ends the call.
   */
  const readUnary = async (call: NativeCall): Promise<Message> => {
    const timer = setTimeout(() => {
      call.input.fail(
        new ConnectError(
          `request message not received within ${unaryBodyTimeoutMs} ms of the headers: send the whole request at once`,
          Code.DeadlineExceeded,
        ),
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
    return {
      stream: false,
      service: ctx.service,
      method: route.method,
      header: ctx.responseHeader,
      trailer: ctx.responseTrailer,
      message,
    } as UnaryResponse;
  };
  // connect's applyInterceptors (not exported): the first interceptor is the outermost. Built once.
  const chain = interceptors.reduceRight<Next>((inner, interceptor) => interceptor(inner as Parameters<Interceptor>[0]) as Next, invoke);
  const unaryChain = interceptors.reduceRight<UnaryNext>(
    (inner, interceptor) => interceptor(inner as Parameters<Interceptor>[0]) as UnaryNext,
    invokeUnary,
  );
  const byPath = new Map(methods.map((s) => [`/${s.method.parent.typeName}/${s.method.name}`, s]));

  /** Runs a call through the interceptors and its handler, and writes its response; never rejects. */
  const execute = async (call: NativeCall): Promise<void> => {
    const { ctx, input, output, route } = call;
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
    }
  };

  const run = async (route: NativeMethod, raw: http2.ServerHttp2Stream, headers: RawHeaders, req: http2.Http2ServerRequest | undefined) => {
    const stream = raw as CallStream;
    const { method } = route;
    const values = (req && contextValues?.(req)) ?? (Object.create(contextValuesPrototype) as ContextValues);
    const input = new FramedInput(
      raw,
      route.decode ?? ((buf, start, end) => fromBinary(method.input, buf.subarray(start, end))),
      maxMessageBytes,
    );
    const output = new FramedOutput(
      raw,
      method.output,
      maxMessageBytes,
      route.encode,
      isUnary(route) ? undefined : route.writeHighWaterBytes,
    );
    const call = new NativeCall(route, headers, values, raw.session, input, output);
    stream[CALL] = call;
    stream.on("error", ignoreStreamError);
    // `on`, not `once` (which wraps each listener in a closure per call): gone() is idempotent.
    stream.on("aborted", onStreamGone);
    stream.on("close", onStreamGone);
    try {
      await execute(call);
    } finally {
      // Whatever the client still sends is read and dropped, so its flow-control credit returns.
      stream.removeAllListeners("data");
      stream.resume();
    }
  };

  return {
    methodAt: (path) => byPath.get(path),
    execute,
    maxMessageBytes,
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
