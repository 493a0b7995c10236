import type http2 from "node:http2";
import { fromBinary, type DescMethodStreaming, type DescMethodUnary, type DescService, type Message } from "@bufbuild/protobuf";
import { Code, ConnectError, type ContextValues, type UnaryRequest } from "@connectrpc/connect";
import { connectionKey, contextValuesPrototype, LazyHeaders, NativeContext, type RawHeaders } from "./context";
import { FramedInput } from "./framed-input";
import { FramedOutput } from "./framed-output";
import { isUnary, type NativeMethod } from "./methods";
import { parseGrpcTimeout } from "./wire";

/**
 * One native call: its context, both directions, and the request the interceptors see. The request
 * is also its `message`: an AsyncIterable that refuses to be read (a native call's messages reach
 * the handler through its MessageInput), and which carries the call to the innermost function of
 * the interceptor chain, so that the chain is built once per method instead of once per call.
 */
export class NativeCall implements AsyncIterable<never> {
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
    contextValues: ((req: http2.Http2ServerRequest) => ContextValues) | undefined,
  ) {
    const { method } = route;
    const header = new LazyHeaders(headers);
    const timeout = parseGrpcTimeout(header.get("grpc-timeout") ?? undefined);
    this.input = new FramedInput(
      raw,
      route.decode ?? ((buf, start, end) => fromBinary(method.input, buf.subarray(start, end))),
      maxMessageBytes,
    );
    this.output = new FramedOutput(
      raw,
      method.output,
      maxMessageBytes,
      route.encode,
      isUnary(route) ? undefined : route.writeHighWaterBytes,
    );
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
export class NativeUnaryRequest implements UnaryRequest {
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
