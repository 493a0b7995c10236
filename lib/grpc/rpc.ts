/**
 * The RPC boundary shared by every service: typed domain errors, the one place that maps them to
 * ConnectError codes, per-RPC logging and metrics (an interceptor, not code in handlers), and
 * bearer-token authentication once per call.
 */
import { Code, ConnectError, createContextKey, type HandlerContext, type Interceptor, type StreamResponse } from "@connectrpc/connect";
import { decodeJwt } from "jose";
import { AuthError, verifyToken, type Claims, type TokenKeys } from "../auth";
import type { Logger } from "../log";
import { Counter, Gauge, Histogram, latencyBuckets, type Registry } from "../metrics";

export { AuthError } from "../auth";

/** The caller is authenticated but may not do this (e.g. a point for another vehicle). */
export class PermissionError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "PermissionError";
  }
}

/** The caller went past a rate limit; `retryAfterMs` says when it may try again. */
export class RateLimitError extends Error {
  constructor(
    message: string,
    readonly retryAfterMs: number,
  ) {
    super(message);
    this.name = "RateLimitError";
  }
}

/** A backing store (JetStream, Redis, PostgreSQL) cannot take or give data right now: retry with backoff. */
export class UnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "UnavailableError";
  }
}

/** The request is malformed as a whole (not one point of it, which is a rejection with a reason). */
export class InvalidRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidRequestError";
  }
}

/** The thing asked for does not exist (or the caller may not learn that it does). */
export class NotFoundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NotFoundError";
  }
}

/** A server stream's client reads too slowly and fell behind past a bound. */
export class TooSlowError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TooSlowError";
  }
}

/**
 * The caller already holds as much of a bounded resource as it may (concurrent streams of a kind,
 * per token or in total): RESOURCE_EXHAUSTED, with a message naming the limit and its variable.
 */
export class LimitExceededError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LimitExceededError";
  }
}

/** A stream sent nothing for too long. */
export class IdleTimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "IdleTimeoutError";
  }
}

/** The service is shutting down; the caller should reconnect (to another instance). */
export class ShuttingDownError extends Error {
  constructor(message = "server is shutting down: reconnect and resend what was not acked") {
    super(message);
    this.name = "ShuttingDownError";
  }
}

/**
 * Maps any error to the ConnectError the caller sees. ConnectErrors pass through, except the
 * parse failures connect-es reports as Internal (bad bytes from the client are INVALID_ARGUMENT).
 * Returns `known: false` for errors nobody expected, which the caller logs with context.
 */
export function toConnectError(err: unknown): { error: ConnectError; known: boolean } {
  if (err instanceof ConnectError) {
    if (err.code === Code.Internal && err.rawMessage.startsWith("parse binary")) {
      return { error: new ConnectError(err.rawMessage, Code.InvalidArgument), known: true };
    }
    return { error: err, known: true };
  }
  if (err instanceof AuthError) return { error: new ConnectError(err.message, Code.Unauthenticated), known: true };
  if (err instanceof PermissionError) return { error: new ConnectError(err.message, Code.PermissionDenied), known: true };
  if (err instanceof RateLimitError) {
    const seconds = Math.max(1, Math.ceil(err.retryAfterMs / 1000));
    return {
      error: new ConnectError(err.message, Code.ResourceExhausted, {
        "retry-after": String(seconds),
        "retry-after-ms": String(Math.ceil(err.retryAfterMs)),
      }),
      known: true,
    };
  }
  if (err instanceof UnavailableError) return { error: new ConnectError(err.message, Code.Unavailable), known: true };
  if (err instanceof ShuttingDownError) return { error: new ConnectError(err.message, Code.Unavailable), known: true };
  if (err instanceof InvalidRequestError) return { error: new ConnectError(err.message, Code.InvalidArgument), known: true };
  if (err instanceof NotFoundError) return { error: new ConnectError(err.message, Code.NotFound), known: true };
  if (err instanceof TooSlowError) return { error: new ConnectError(err.message, Code.ResourceExhausted), known: true };
  if (err instanceof LimitExceededError) return { error: new ConnectError(err.message, Code.ResourceExhausted), known: true };
  if (err instanceof IdleTimeoutError) return { error: new ConnectError(err.message, Code.DeadlineExceeded), known: true };
  return { error: new ConnectError("internal error: see the server log", Code.Internal), known: false };
}

/** Codes that say the caller did something wrong or should retry: logged at warn, not error. */
const clientCodes = new Set<Code>([
  Code.Canceled,
  Code.InvalidArgument,
  Code.DeadlineExceeded,
  Code.NotFound,
  Code.AlreadyExists,
  Code.PermissionDenied,
  Code.ResourceExhausted,
  Code.FailedPrecondition,
  Code.Aborted,
  Code.OutOfRange,
  Code.Unauthenticated,
  Code.Unavailable,
]);

const codeName = (code: Code | 0) => (code === 0 ? "ok" : Code[code]!.replace(/[A-Z]/g, (c, i) => (i ? "_" : "") + c.toLowerCase()));

export interface RpcInterceptorOptions {
  log: Logger;
  registry: Registry;
}

/**
 * Per-RPC logging (one line per call at debug; errors at warn or error with procedure, code and
 * duration), the error mapping, and metrics: calls by procedure and code, duration, open streams.
 */
export function createRpcInterceptor({ log, registry }: RpcInterceptorOptions): Interceptor {
  const calls = new Counter({
    name: "rpc_calls_total",
    help: "RPCs finished, by procedure and status code",
    labelNames: ["procedure", "code"],
    registers: [registry],
  });
  const duration = new Histogram({
    name: "rpc_duration_seconds",
    help: "RPC duration (streams: from open to end)",
    labelNames: ["procedure"],
    buckets: latencyBuckets,
    registers: [registry],
  });
  const openStreams = new Gauge({
    name: "rpc_open_streams",
    help: "streaming RPCs open now",
    labelNames: ["procedure"],
    registers: [registry],
  });

  /** `req` is read only on failure: a native call makes its AbortSignal only when someone reads it. */
  const finish = (procedure: string, started: number, err: unknown, req?: { readonly signal: AbortSignal }): ConnectError | undefined => {
    const seconds = (performance.now() - started) / 1000;
    let code: Code | 0 = 0;
    let mapped: ConnectError | undefined;
    if (err !== undefined) {
      // The client went away (reset, "Premature close"): not a server fault.
      const aborted = req?.signal.aborted && !(err instanceof ConnectError);
      const { error, known } = aborted
        ? { error: new ConnectError("call cancelled by the client", Code.Canceled), known: true }
        : toConnectError(err);
      mapped = error;
      code = error.code;
      if (!known)
        log.error("rpc failed", { procedure, code: codeName(code), durationMs: seconds * 1000, err, stack: (err as Error)?.stack });
      else if (clientCodes.has(code))
        log.warn("rpc failed", { procedure, code: codeName(code), durationMs: seconds * 1000, message: error.rawMessage });
      else log.error("rpc failed", { procedure, code: codeName(code), durationMs: seconds * 1000, err });
    } else {
      log.debug("rpc", { procedure, code: "ok", durationMs: seconds * 1000 });
    }
    calls.inc({ procedure, code: codeName(code) });
    duration.observe({ procedure }, seconds);
    return mapped;
  };

  /**
   * A response stream, counted open until it ends; a failure is mapped and logged like a unary
   * one. An object rather than an async generator: it lives as long as the stream, and with
   * 10,000 open streams a generator's suspended frame is memory worth keeping.
   */
  class WatchedMessages<T> implements AsyncIterable<T>, AsyncIterator<T> {
    private it: AsyncIterator<T> | undefined;
    private over = false;

    constructor(
      private readonly messages: AsyncIterable<T>,
      private readonly procedure: string,
      private readonly started: number,
      private readonly req: { readonly signal: AbortSignal },
    ) {}

    [Symbol.asyncIterator](): AsyncIterator<T> {
      this.it = this.messages[Symbol.asyncIterator]();
      return this;
    }

    async next(): Promise<IteratorResult<T>> {
      let r: IteratorResult<T>;
      try {
        r = await this.it!.next();
      } catch (err) {
        throw this.close(err ?? new Error("stream failed"));
      }
      if (r.done) this.close(undefined);
      return r;
    }

    async return(value?: unknown): Promise<IteratorResult<T>> {
      this.close(undefined);
      await this.it?.return?.(value);
      return { done: true, value: undefined };
    }

    /** Ends the count once; returns the mapped error of a failure. */
    private close(err: unknown): ConnectError | undefined {
      if (this.over) return err === undefined ? undefined : toConnectError(err).error;
      this.over = true;
      openStreams.dec({ procedure: this.procedure });
      return finish(this.procedure, this.started, err, err === undefined ? undefined : this.req);
    }
  }

  return (next) => async (req) => {
    const procedure = req.method.name;
    const started = performance.now();
    // Client streams run their whole handler inside next(): count them open from here.
    if (req.stream) openStreams.inc({ procedure });
    let res;
    try {
      res = await next(req);
    } catch (err) {
      if (req.stream) openStreams.dec({ procedure });
      throw finish(procedure, started, err, req)!;
    }
    if (!res.stream) {
      finish(procedure, started, undefined);
      return res;
    }
    return { ...res, message: new WatchedMessages(res.message, procedure, started, req) } as StreamResponse;
  };
}

const claimsKey = createContextKey<Claims | undefined>(undefined, { description: "verified bearer claims" });

/** Bytes of verified tokens and their claims remembered at most; past it the oldest are forgotten. */
const VERIFIED_CACHE_BYTES = 16 * 1024 * 1024;

/**
 * The token of an `authorization` header, as RFC 6750 writes it: the scheme `Bearer` in any case
 * (RFC 9110: schemes are case-insensitive), one or more spaces, a b64token. A tab, a second token
 * or any other character is refused with what to send. The header's spelling never reaches the
 * token cache: `bearer  T` and `Bearer T` are the one token T.
 */
export function bearerToken(header: string | null): string {
  if (!header) throw new AuthError('missing token: send "authorization: Bearer <token>" (mint one with `fleet token`)');
  const m = /^Bearer +([A-Za-z0-9\-._~+/]+=*)$/i.exec(header);
  if (!m) throw new AuthError('authorization header must be "Bearer <token>": the word Bearer, a space, then the token');
  return m[1]!;
}

/** What a remembered token costs: its characters (Latin-1, one byte each) and its claims' strings, plus a fixed overhead. */
function entryBytes(token: string, claims: Claims): number {
  let bytes = 200 + token.length;
  if (claims.role === "vehicle") bytes += 2 * (claims.vehicleId.length + claims.fleetId.length);
  else for (const list of [claims.vehicles, claims.fleets, claims.orders]) for (const item of list) bytes += 2 * item.length + 16;
  return bytes;
}

export interface AuthInterceptorOptions {
  /** Bytes of verified tokens (and their claims) remembered at most. */
  cacheBytes?: number;
}

/** What the auth interceptor remembers: verified tokens, bounded in bytes; `size` and `bytes` are for tests and metrics. */
export class VerifiedTokens {
  private readonly entries = new Map<string, { claims: Claims; expiresMs: number; bytes: number }>();
  bytes = 0;

  constructor(private readonly maxBytes: number) {}

  get size(): number {
    return this.entries.size;
  }

  get(token: string): Claims | undefined {
    const hit = this.entries.get(token);
    if (!hit) return undefined;
    if (Date.now() < hit.expiresMs) return hit.claims;
    this.delete(token);
    return undefined;
  }

  set(token: string, claims: Claims, expiresMs: number): void {
    const bytes = entryBytes(token, claims);
    if (bytes > this.maxBytes / 16) return; // one outsized token must not flush everyone else's
    this.delete(token);
    while (this.bytes + bytes > this.maxBytes && this.entries.size > 0) this.delete(this.entries.keys().next().value!);
    this.entries.set(token, { claims, expiresMs, bytes });
    this.bytes += bytes;
  }

  private delete(token: string): void {
    const hit = this.entries.get(token);
    if (!hit) return;
    this.entries.delete(token);
    this.bytes -= hit.bytes;
  }
}

/**
 * Verifies the bearer token once per call (not per message) and keeps the claims in the call's
 * context values; handlers read them with `claimsOf(ctx)`. A missing or bad token fails the call
 * with UNAUTHENTICATED before the handler runs.
 *
 * A token that verified is remembered until its `exp`: a vehicle opens a new stream every few
 * seconds with the same token, and an HS256 check through WebCrypto cost more than the stream's
 * points. Only successes are kept, so a bad token is checked (and refused) every time. The cache is
 * keyed by the token, not the header, and bounded in bytes (`cacheBytes`, default 16 MiB).
 */
export function createAuthInterceptor(
  keys: TokenKeys,
  { cacheBytes = VERIFIED_CACHE_BYTES }: AuthInterceptorOptions = {},
): Interceptor & { readonly cache: VerifiedTokens } {
  const verified = new VerifiedTokens(cacheBytes);
  const verify = async (header: string | null): Promise<Claims> => {
    const token = bearerToken(header);
    const hit = verified.get(token);
    if (hit) return hit;
    const claims = await verifyToken(keys, token);
    // verifyToken required `exp`.
    verified.set(token, claims, decodeJwt(token).exp! * 1000);
    return claims;
  };
  const interceptor: Interceptor = (next) => async (req) => {
    const claims = await verify(req.header.get("authorization"));
    req.contextValues.set(claimsKey, claims);
    return next(req);
  };
  return Object.assign(interceptor, { cache: verified });
}

/** The claims the auth interceptor verified for this call. */
export function claimsOf(ctx: HandlerContext): Claims {
  const claims = ctx.values.get(claimsKey);
  if (!claims) throw new AuthError("call was not authenticated");
  return claims;
}
