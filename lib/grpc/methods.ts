/** The methods served natively, and the builders services declare them with. */
import type {
  DescMessage,
  DescMethodBiDiStreaming,
  DescMethodClientStreaming,
  DescMethodServerStreaming,
  DescMethodStreaming,
  DescMethodUnary,
  DescService,
  Message,
  MessageInitShape,
  MessageShape,
} from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { single, type MessageDecoder, type MessageEncoder, type MessageInput } from "./input";

type AnyInput = MessageInput<Message>;

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

export const isUnary = (route: NativeMethod): route is NativeUnary => route.method.methodKind === "unary";

/**
 * Every unary method of `service` that `impl` implements, served natively with the same handler;
 * `encoders` writes a method's responses instead of protobuf-es (exactly what toBinary writes).
 */
export function nativeUnaryMethods<S extends DescService>(
  service: S,
  impl: Partial<ServiceImpl<S>>,
  encoders: Partial<Record<keyof ServiceImpl<S>, MessageEncoder<Message>>> = {},
): NativeUnary[] {
  const handlers = impl as unknown as Record<
    string,
    ((req: Message, ctx: HandlerContext) => Promise<MessageInitShape<DescMessage>>) | undefined
  >;
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
    invoke: async (input, ctx) =>
      one(await handler(input as unknown as MessageInput<MessageShape<I>>, ctx)) as AsyncIterable<MessageInitShape<DescMessage>>,
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
    invoke: async (input, ctx) =>
      handler(input as unknown as MessageInput<MessageShape<I>>, ctx) as AsyncIterable<MessageInitShape<DescMessage>>,
  };
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
    invoke: async (input, ctx) =>
      handler((await single(input)) as unknown as MessageShape<I>, ctx) as AsyncIterable<MessageInitShape<DescMessage>>,
  };
}
