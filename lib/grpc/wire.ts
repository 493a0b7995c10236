/** The gRPC wire details the native path and serve.ts share: timeouts, grpc-message, trailers, content types. */
import type http2 from "node:http2";
import type { ConnectError } from "@connectrpc/connect";
import { parseTimeout } from "@connectrpc/connect/protocol-grpc";

/** Percent-encodes a grpc-message as the gRPC spec says: only bytes outside 0x20-0x7E, and '%'. */
export function grpcMessageEncode(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/**
 * The longest deadline a call gets. Timers hold a signed 32-bit count of milliseconds: a longer
 * delay (grpc-go sends `2592000S`, 30 days, for "no deadline") fires at once, which failed such
 * calls with DEADLINE_EXCEEDED at their start. Longer deadlines are clamped to this (~24.8 days).
 */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * gRPC's timeout header, parsed by connect-es's own helper (so it says what connect says of a bad
 * value), then clamped to MAX_TIMEOUT_MS instead of refused: connect refuses past its bound.
 */
export function parseGrpcTimeout(value: string | undefined): { timeoutMs?: number; error?: ConnectError } {
  const parsed = parseTimeout(value ?? null, Number.POSITIVE_INFINITY);
  if (parsed.error || parsed.timeoutMs === undefined) return parsed;
  return { timeoutMs: Math.min(parsed.timeoutMs, MAX_TIMEOUT_MS) };
}

/**
 * Rewrites a request's `grpc-timeout` or `connect-timeout-ms` past MAX_TIMEOUT_MS to that bound,
 * before connect-node sees it (it would arm a timer that fires at once).
 */
export function clampTimeoutHeaders(headers: Record<string, string | string[] | undefined>): void {
  const grpc = headers["grpc-timeout"];
  if (typeof grpc === "string") {
    const { timeoutMs } = parseTimeout(grpc, Number.POSITIVE_INFINITY);
    if (timeoutMs !== undefined && timeoutMs > MAX_TIMEOUT_MS) headers["grpc-timeout"] = `${Math.floor(MAX_TIMEOUT_MS / 1000)}S`;
  }
  const connect = headers["connect-timeout-ms"];
  if (typeof connect === "string" && /^\d{1,10}$/.test(connect) && Number(connect) > MAX_TIMEOUT_MS)
    headers["connect-timeout-ms"] = String(MAX_TIMEOUT_MS);
}

/** Headers as the plain object node:http2 takes, without HTTP/2 pseudo-headers. */
export function headersObject(into: http2.OutgoingHttpHeaders, headers: Headers): http2.OutgoingHttpHeaders {
  headers.forEach((value, key) => {
    into[key] = value;
  });
  return into;
}

/** What a client hears when its request message is over the limit, on every protocol the port speaks. */
export function tooLargeMessage(bytes: number, limit: number): string {
  return `message of ${bytes} bytes is over this server's limit of ${limit} bytes: send smaller messages (fewer points in each)`;
}
/** The trailers of a failed call, as connect writes them (status, encoded message, error metadata). */
export function errorTrailers(err: ConnectError, trailer: Headers): http2.OutgoingHttpHeaders {
  const out = headersObject({}, trailer);
  out["grpc-status"] = String(err.code);
  out["grpc-message"] = grpcMessageEncode(err.rawMessage);
  err.metadata.forEach((value, key) => {
    out[key] = value;
  });
  return out;
}

export const GRPC_CONTENT_TYPES = new Set(["application/grpc", "application/grpc+proto"]);
