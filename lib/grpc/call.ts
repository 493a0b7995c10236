import type http2 from "node:http2";
import type { DescMessage, DescMethodStreaming, DescMethodUnary, DescService, Message, MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type ContextValues, type UnaryRequest } from "@connectrpc/connect";
import { connectionKey, LazyHeaders, NativeContext, type RawHeaders } from "./context";
import type { MessageInput } from "./input";
import type { NativeMethod } from "./methods";
import { parseGrpcTimeout } from "./wire";

/**
 * The request side of a native call, whatever carries it: FramedInput on a node:http2 stream, or
 * lib/grpc/serve-lite.ts's input on an h2lite stream (lib/h2).
 */
export interface CallInput extends MessageInput<Message> {
  /** Fails the stream (protocol error, reset, deadline); before `start`, the handler gets it on start. */
  fail(err: unknown): void;
}

/** The response side of a native call: headers with the first message, then trailers (or trailers only). */
export interface CallOutput {
  message(init: MessageInitShape<DescMessage>, headers: Headers): void;
  /** Resolves once the client took enough of what was written (or the stream is gone); undefined: write on. */
  writable(): Promise<void> | undefined;
  end(headers: Headers, trailers: http2.OutgoingHttpHeaders): void;
}

/**
 * One native call: its context, both directions, and the request the interceptors see. The request
 * is also its `message`: an AsyncIterable that refuses to be read (a native call's messages reach
 * the handler through its MessageInput), and which carries the call to the innermost function of
 * the interceptor chain, so that the chain is built once per method instead of once per call.
 */
export class NativeCall implements AsyncIterable<never> {
  readonly ctx: NativeContext;
  /** The handler's response is written (or failed); a later 'close' is not a cancellation. */
  finished = false;

  constructor(
    readonly route: NativeMethod,
    headers: RawHeaders,
    /** The call's context values; connectionKey is set on them. */
    values: ContextValues,
    /** The client connection (connectionKey): limits per connection. */
    connection: object | undefined,
    readonly input: CallInput,
    readonly output: CallOutput,
    /** Default: made of `headers`' :authority and :path (a transport that keeps no pseudo-headers passes its own). */
    url = `http://${headers[":authority"] ?? "localhost"}${headers[":path"]}`,
  ) {
    const { method } = route;
    const header = new LazyHeaders(headers);
    const timeout = parseGrpcTimeout(header.get("grpc-timeout") ?? undefined);
    this.ctx = new NativeContext(
      method,
      url,
      header,
      values.set(connectionKey, connection),
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

  // StreamRequest, as the interceptors see it. Constants are getters, not fields: a field is 8
  // bytes of every open call.
  get stream(): true {
    return true;
  }
  get requestMethod(): "POST" {
    return "POST";
  }
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
