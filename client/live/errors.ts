/**
 * The live client's one error type: a `code` an app can switch on, whether the client retries by
 * itself, and a message that says what to do. The tracker's and history's own words stay in
 * `serverMessage` (and the ConnectError in `cause`).
 */
import { Code, ConnectError } from "@connectrpc/connect";

export type LiveErrorCode =
  /** The token's `exp` passed: get a new token. */
  | "token-expired"
  /** No token, or one that is malformed, forged or of another platform. */
  | "unauthenticated"
  /** The token is valid but does not grant this vehicle, order, fleet or action. */
  | "permission-denied"
  /** The request itself is wrong (an id, an area, a time range): fix it. */
  | "invalid-argument"
  /** GetVehicle of a vehicle the tracker never saw. */
  | "not-found"
  /** Too many watches or replays open, or a watcher too slow: the client retries watches. */
  | "resource-exhausted"
  /** No server answered (down, restarting, unreachable): the client retries watches. */
  | "unavailable"
  /** The caller's AbortSignal ended the call. */
  | "aborted"
  /** Anything else the server or the network said. */
  | "internal";

/** An error of the live client; `retryable` says whether a watch goes on by itself after it. */
export class LiveError extends Error {
  override readonly name = "LiveError";
  readonly code: LiveErrorCode;
  /** True when a watch reconnects after this error; false when it ends the watch (or the call). */
  readonly retryable: boolean;
  /** The server's own message, if a server answered. */
  readonly serverMessage: string;
  /** The Connect/gRPC status code, if any. */
  readonly connectCode: Code | undefined;

  constructor(
    code: LiveErrorCode,
    message: string,
    {
      retryable = false,
      serverMessage = "",
      connectCode,
      cause,
    }: { retryable?: boolean; serverMessage?: string; connectCode?: Code; cause?: unknown } = {},
  ) {
    super(message, { cause });
    this.code = code;
    this.retryable = retryable;
    this.serverMessage = serverMessage;
    this.connectCode = connectCode;
  }
}

/** Codes after which trying again with the same token and request cannot succeed. */
const FINAL = new Set<LiveErrorCode>(["token-expired", "unauthenticated", "permission-denied", "invalid-argument", "not-found", "aborted"]);

function codeOf(err: ConnectError): LiveErrorCode {
  switch (err.code) {
    case Code.Unauthenticated:
      // The services word an expired token "token expired: mint a new one" (lib/auth.ts).
      return /expired/i.test(err.rawMessage) ? "token-expired" : "unauthenticated";
    case Code.PermissionDenied:
      return "permission-denied";
    case Code.InvalidArgument:
    case Code.OutOfRange:
    case Code.Unimplemented:
      return "invalid-argument";
    case Code.NotFound:
      return "not-found";
    case Code.ResourceExhausted:
      return "resource-exhausted";
    case Code.Unavailable:
    // Not the caller's abort (the client checks its signal first): the server's side went away,
    // e.g. an HTTP/2 stream reset with CANCEL when the tracker's process died.
    case Code.Canceled:
    case Code.DeadlineExceeded:
    // A connection reset or refused before any answer: fetch and http2 report it as Unknown.
    case Code.Unknown:
      return "unavailable";
    default:
      return "internal";
  }
}

const ADVICE: Record<LiveErrorCode, string> = {
  "token-expired": "the token expired: get a new one (fleet token watch …) and open it again",
  unauthenticated: "the token was refused: check that it is a watch token of this platform, sent whole",
  "permission-denied": "the token does not grant this: use a token that grants the vehicle, order or fleet",
  "invalid-argument": "the request was refused: fix it",
  "not-found": "not found",
  "resource-exhausted": "the server is at a limit: close other watches or narrow the request",
  unavailable: "no server answered: it may be down or restarting",
  aborted: "aborted by the caller",
  internal: "the server failed",
};

/**
 * `err` (a ConnectError, a fetch TypeError, an abort) as a LiveError. `what` names the call
 * ("watch vehicle truck-9"); `retrying` adds that the client goes on by itself.
 */
export function toLiveError(err: unknown, what: string, { retrying = false }: { retrying?: boolean } = {}): LiveError {
  if (err instanceof LiveError) return err;
  const ce = ConnectError.from(err);
  const code = codeOf(ce);
  const retryable = !FINAL.has(code);
  const serverMessage = ce.rawMessage;
  const tail = retryable && retrying ? "; retrying" : "";
  return new LiveError(code, `${what}: ${ADVICE[code]} (${Code[ce.code] ?? ce.code}: ${serverMessage})${tail}`, {
    retryable,
    serverMessage,
    connectCode: ce.code,
    cause: err,
  });
}

/** The error a call ends with when its signal aborts. */
export function abortedError(what: string): LiveError {
  return new LiveError("aborted", `${what}: aborted by the caller`, { connectCode: Code.Canceled });
}
