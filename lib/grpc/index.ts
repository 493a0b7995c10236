/**
 * The RPC server the services share: `serve()` (serve.ts: connect-node on one port for gRPC,
 * gRPC-Web and Connect over HTTP/2 and HTTP/1.1, with the Bun workarounds in workarounds.ts), the
 * typed domain errors and the interceptors that map them to codes (rpc.ts), and the native gRPC
 * path for hot methods (router.ts and the files it is made of: input, framed-input, framed-output,
 * context, call, methods, wire), which services declare with the `native*` builders; and
 * `serveLite()` (serve-lite.ts), the same native methods on a second port over lib/h2.
 */
export { connectionKey } from "./context";
export { iterableInput, type MessageDecoder, type MessageEncoder, type MessageInput, type MessageSink } from "./input";
export { nativeBidiStream, nativeClientStream, nativeServerStream, nativeUnaryMethods, type NativeMethod } from "./methods";
export {
  claimsOf,
  createAuthInterceptor,
  createRpcInterceptor,
  IdleTimeoutError,
  InvalidRequestError,
  LimitExceededError,
  NotFoundError,
  PermissionError,
  RateLimitError,
  ShuttingDownError,
  TooSlowError,
  UnavailableError,
} from "./rpc";
export { createNativeGrpc, type NativeGrpc } from "./router";
export { serve, type ServeOptions, type Server } from "./serve";
export { serveLite, type LiteServer, type ServeLiteOptions } from "./serve-lite";
