/** The connect HandlerContext of a native call, and the cheap Headers and ContextValues it is made of. */
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextKey,
  type ContextKey,
  type ContextValues,
  type HandlerContext,
  type StreamRequest,
  type UnaryRequest,
} from "@connectrpc/connect";

export type RawHeaders = Readonly<Record<string, string | string[] | undefined>>;

/**
 * A `Headers` read from a plain header object until someone changes it. A native call holds three
 * (request, response, trailer) for its whole life; as WebCore `Headers` they cost ~1 KB of memory
 * per open stream, as this they cost one small object over the header object node:http2 already has.
 * Pseudo-headers (`:path`, …) are not headers and are never shown.
 */
export class LazyHeaders implements Headers {
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

export const RESPONSE_HEADER: RawHeaders = Object.freeze({ "content-type": "application/grpc+proto" });
export const RESPONSE_TRAILER: RawHeaders = Object.freeze({ "grpc-status": "0" });

/** connect's ContextValues, with its methods on a prototype instead of three closures per call. */
export const contextValuesPrototype: ContextValues = {
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
export class NativeContext implements HandlerContext {
  readonly responseHeader: Headers = new LazyHeaders(RESPONSE_HEADER);
  readonly responseTrailer: Headers = new LazyHeaders(RESPONSE_TRAILER);
  private controller: AbortController | undefined;
  private aborted = false;
  private reason: unknown;
  private deadlineTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
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

  // Getters, not fields: a field is 8 bytes of every open call.
  get service(): DescService {
    return this.method.parent;
  }
  get protocolName(): string {
    return "grpc";
  }
  get requestMethod(): string {
    return "POST";
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
/** The context a handler sees: the call's own, or one over the request an interceptor passed on instead (other headers or values). */
export function handlerContext(ctx: NativeContext, r: StreamRequest | UnaryRequest, own: boolean): HandlerContext {
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
