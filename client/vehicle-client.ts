/**
 * The vehicle side of ingest: what in-vehicle software links to send its positions and know
 * which of them are durable.
 *
 * One client per vehicle. `push()` only appends to a local buffer (no timer, no I/O per point);
 * one loop per client holds a rolling `Upload` stream, half-closes it every N points or T ms,
 * and drops from the buffer what the ack says is durable or refused. On a reconnect it asks
 * `Resume` where the gateway stands and re-sends exactly what is missing, so a point leaves
 * the buffer only once the gateway said it is in JetStream (or refused it).
 *
 * Many clients can share one HTTP/2 connection: pass the same `transport`
 * (see `createIngestTransport`) to all of them. Each client holds one stream at a time, so keep the
 * clients per connection under the gateway's GATEWAY_MAX_STREAMS_PER_CONNECTION (1000 by default).
 *
 * Cost: most of the CPU per point is connect-es's streaming pipeline (one message per point, as
 * the contract has it); this file adds a buffer append on push and a yield when sending.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { IngestService, RejectReason, type IngestAck, type Rejection, type UploadRequest } from "../gen/fleet/v1/ingest_pb";
import { PositionSchema, type Position } from "../gen/fleet/v1/position_pb";
import { silentLogger, type Logger } from "../lib/log";

/** What `push()` takes: a Position message or its init shape. `seq` 0 means "assign one". */
export type PositionInput = Position | MessageInitShape<typeof PositionSchema>;

export interface VehicleClientOptions {
  /**
   * Gateway base URL: `http://host:port` (gRPC over h2c) or `https://host:port` (h2 over TLS), or
   * several gateways' URLs: the client uses the first and, when a call to one breaks in a way another
   * gateway may not (UNAVAILABLE, a dropped connection, a timeout), moves to the next after its
   * backoff and asks that one's Resume where the vehicle stands. Unused when `transport` is given.
   */
  url?: string | readonly string[];
  /** Vehicle JWT. Either this or `getToken`. */
  token?: string;
  /** Called on every (re)connect and after an UNAUTHENTICATED answer, to get a current token. */
  getToken?: () => string | Promise<string>;
  /** The vehicle this client speaks for; points without a vehicle_id get it. */
  vehicleId: string;
  /**
   * Most points kept locally while not acked. When full, `push` drops the OLDEST buffered point
   * (counted in `stats.dropped`): a vehicle cares more about where it is now than where it was
   * when the network went away, and in-vehicle code must never block on telemetry.
   */
  bufferLimit?: number;
  /** Half-close the Upload stream (and get its ack) after this many points or this many ms. */
  rollEvery?: { points?: number; ms?: number };
  /** Reconnect delay: full jitter, random(0, min(maxMs, initialMs·2^attempt)). */
  backoff?: { initialMs?: number; maxMs?: number };
  /** After half-closing, how long to wait for the ack before giving the stream up as broken. */
  ackTimeoutMs?: number;
  /** Timeout of one Resume call. */
  resumeTimeoutMs?: number;
  /** Seq of the first point when neither the gateway nor the app knows a later one (apps that persist seq pass theirs). */
  startSeq?: number;
  /** A connect Transport to share one HTTP/2 connection among many clients; several, one per gateway, to fail over as with `url`. */
  transport?: Transport | readonly Transport[];
  /** Called when the durable seq advances (DUPLICATE refusals count as durable; SEQ_SKIPPED ones do not). */
  onAck?: (durableSeq: number) => void;
  /**
   * Called once per refused point (never for DUPLICATE). A refusal whose ack was lost with a broken
   * stream cannot be told from an ack: Resume only says how far the vehicle is durable.
   */
  onReject?: (rejection: Rejection) => void;
  /** Called once when the client stops for good (UNAUTHENTICATED, PERMISSION_DENIED, …). */
  onError?: (error: ConnectError) => void;
  log?: Logger;
}

export interface VehicleClientStats {
  /** Points given to `push`. */
  pushed: number;
  /** Points the gateway said are durable (including DUPLICATE refusals). */
  acked: number;
  /** Points the gateway refused for a reason other than DUPLICATE (SEQ_SKIPPED and DUPLICATE_TIME among them: not stored). */
  rejected: number;
  /** Points dropped locally because the buffer was full. */
  dropped: number;
  /** Times the client had to reconnect after a broken stream or call. */
  reconnects: number;
  /** Times the client moved to another gateway address (only with several). */
  failovers: number;
  /** Index, in `url` (or `transport`), of the gateway the client uses now. */
  gateway: number;
  /** Highest seq the gateway said is durable. */
  durableSeq: number;
  /** Points waiting for an ack. */
  buffered: number;
  /** True while the last call to the gateway went through. */
  connected: boolean;
}

export interface VehicleClient {
  readonly vehicleId: string;
  /**
   * Buffers one point for sending. Assigns `seq` when it is 0: monotonic, after the resume point
   * (assigned when the point is first sent, so that it follows what the gateway already has).
   * Returns false only when the client is closed or stopped on an error.
   */
  push(position: PositionInput): boolean;
  /** Resolves when every point pushed so far is acked, refused or dropped; rejects if the client stops on an error. */
  flush(): Promise<void>;
  /**
   * Breaks the current stream as a network drop would (the client then resumes). For simulators
   * and tests: with a shared transport the connection stays up, only this vehicle's stream ends.
   * A no-op while no stream is open (between two streams, during Resume or a backoff).
   */
  disconnect(): void;
  /** Half-closes the stream, waits (bounded) for its ack, then stops. Unacked points stay in `stats.buffered`. */
  close(): Promise<void>;
  /** Live counters (a fresh object each read). */
  readonly stats: VehicleClientStats;
  /** The error the client stopped on, if any. */
  readonly error: ConnectError | undefined;
}

/** Options of a shared ingest transport. */
export interface IngestTransportOptions {
  /** Gateway base URL: http:// (h2c) or https:// (TLS). */
  url: string;
  /** Skip TLS certificate checks (local testing with a self-signed certificate only). */
  insecure?: boolean;
  /** HTTP/2 PING interval, so that a dead connection is noticed while streams wait. */
  pingIntervalMs?: number;
}

/** Creates a gRPC (HTTP/2) transport that many vehicle clients can share: one connection for all. */
export function createIngestTransport({ url, insecure = false, pingIntervalMs = 10_000 }: IngestTransportOptions): Transport {
  return createGrpcTransport({
    baseUrl: url,
    pingIntervalMs,
    pingTimeoutMs: 5_000,
    nodeOptions: insecure ? { rejectUnauthorized: false } : {},
  });
}

interface Entry {
  p: Position;
  /** Push ordinal, so that flush() knows which points were pushed before it. */
  n: number;
  /** Streams this point was written to. */
  sends: number;
  /** Refused once after a re-send; a second refusal is final. */
  recheck: boolean;
}

interface FlushWaiter {
  target: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** The trailer with the vehicle's durable seq that ends every ingest call (gateway/ingest-service.ts). */
const DURABLE_SEQ_TRAILER = "fleet-durable-seq";

const RETRYABLE_SILENTLY = new Set([Code.Unavailable, Code.Canceled, Code.Aborted, Code.DeadlineExceeded, Code.Unknown, Code.Internal]);
const FATAL = new Set([Code.Unauthenticated, Code.PermissionDenied, Code.InvalidArgument, Code.Unimplemented]);

/** Creates a client for one vehicle; it connects on the first `push`. */
export function createVehicleClient({
  url,
  token,
  getToken,
  vehicleId,
  bufferLimit = 10_000,
  rollEvery = {},
  backoff = {},
  ackTimeoutMs = 30_000,
  resumeTimeoutMs = 10_000,
  startSeq = 1,
  transport,
  onAck,
  onReject,
  onError,
  log = silentLogger,
}: VehicleClientOptions): VehicleClient {
  if (!vehicleId) throw new Error("vehicleId is empty: pass the id the vehicle token was minted for");
  if (!token && !getToken) throw new Error("pass token or getToken");
  const transports: readonly Transport[] = transport
    ? Array.isArray(transport)
      ? transport
      : [transport as Transport]
    : (typeof url === "string" ? [url] : (url ?? [])).map((u) => createIngestTransport({ url: u }));
  if (transports.length === 0) throw new Error("pass url or transport (one gateway at least)");
  const rollPoints = rollEvery.points ?? 500;
  const rollMs = rollEvery.ms ?? 5_000;
  const backoffInitial = backoff.initialMs ?? 250;
  const backoffMax = backoff.maxMs ?? 10_000;
  const clients: Client<typeof IngestService>[] = transports.map((t) => createClient(IngestService, t));
  let client = clients[0]!;
  const logger = log.child({ vehicle: vehicleId });

  // Buffer: entries[head..] are unacked, in push order; entries[head..head+sent) are in the current stream.
  let entries: Entry[] = [];
  let head = 0;
  let sent = 0;
  let pushedCount = 0;
  let nextSeq = Math.max(1, startSeq);
  /** Last recorded_at given by `push` to a point without one, in ms: each later one is after it. */
  let lastStampMs = 0;
  // The gateway takes one fix per vehicle and millisecond: points pushed faster than that without a
  // time of their own get the next free millisecond (a vehicle's fixes come far slower).
  const stampNow = (): Timestamp => {
    let ms = Date.now();
    if (ms <= lastStampMs) ms = lastStampMs + 1;
    lastStampMs = ms;
    return timestampFromMs(ms);
  };
  const closing = new AbortController();

  const stats = { pushed: 0, acked: 0, rejected: 0, dropped: 0, reconnects: 0, failovers: 0, gateway: 0, durableSeq: 0, connected: false };
  /**
   * Moves to the next gateway. Its durable seq for the vehicle is what counts from now on, so the
   * caller asks its Resume: a gateway learns what the others made durable by following the stream.
   */
  const failover = () => {
    stats.gateway = (stats.gateway + 1) % clients.length;
    client = clients[stats.gateway]!;
    stats.failovers++;
  };
  let closed = false;
  let fatal: ConnectError | undefined;
  let currentToken = token ?? "";
  let attempt = 0;
  let loopRunning = false;
  let loopDone: Promise<void> = Promise.resolve();
  let flushing = 0;
  const flushWaiters: FlushWaiter[] = [];

  // One pending wake-up at a time: push() resolves it, the stream generator or the idle loop awaits it.
  let wake: (() => void) | undefined;
  const signalWake = () => {
    const w = wake;
    if (w) {
      wake = undefined;
      w();
    }
  };
  const waitWake = () => new Promise<void>((resolve) => (wake = resolve));

  let streamAbort: AbortController | undefined;
  let sleepTimer: ReturnType<typeof setTimeout> | undefined;
  let sleepResolve: (() => void) | undefined;
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      sleepResolve = resolve;
      sleepTimer = setTimeout(() => {
        sleepResolve = undefined;
        resolve();
      }, ms);
    });
  const cancelSleep = () => {
    if (sleepTimer) clearTimeout(sleepTimer);
    const r = sleepResolve;
    sleepResolve = undefined;
    r?.();
  };

  const buffered = () => entries.length - head;

  const compact = () => {
    if (head > 1024 && head * 2 > entries.length) {
      entries = entries.slice(head);
      head = 0;
    }
  };

  const settleFlushes = () => {
    if (flushWaiters.length === 0) return;
    const oldest = head < entries.length ? entries[head]!.n : Number.POSITIVE_INFINITY;
    for (let i = flushWaiters.length - 1; i >= 0; i--) {
      const w = flushWaiters[i]!;
      if (oldest > w.target) {
        flushWaiters.splice(i, 1);
        w.resolve();
      }
    }
  };

  const headers = () => ({ authorization: `Bearer ${currentToken}` });

  const refreshToken = async () => {
    if (getToken) currentToken = await getToken();
  };

  const assignSeq = (p: Position) => {
    if (p.seq === 0) p.seq = nextSeq++;
    else if (p.seq >= nextSeq) nextSeq = p.seq + 1;
  };

  /** Applies a durable seq learnt from an ack or Resume: drops what it covers. */
  let recheckPending = false;
  const applyDurable = (durable: number, rejected: readonly Rejection[]) => {
    let refused: Map<number, Rejection> | undefined;
    if (rejected.length > 0) {
      refused = new Map();
      for (const r of rejected) refused.set(r.seq, r);
    }
    if (durable > stats.durableSeq) stats.durableSeq = durable;
    if (durable >= nextSeq) nextSeq = durable + 1;
    const keep: Entry[] = [];
    let acked = 0;
    for (let i = head; i < entries.length; i++) {
      const e = entries[i]!;
      const seq = e.p.seq;
      const r = refused?.get(seq);
      if (r) {
        if (r.reason === RejectReason.DUPLICATE) acked++;
        else if (r.reason === RejectReason.INVALID_FIELD && e.sends > 1 && !e.recheck) {
          // A re-sent point refused as "seq not above the last accepted": this gateway answers a
          // point whose first send is in flight with that send, but one of before 2026-12-02
          // refused it, and it may well become durable. Ask Resume again after a pause instead of
          // giving it up; a second refusal is final.
          e.recheck = true;
          recheckPending = true;
          keep.push(e);
        } else {
          stats.rejected++;
          onReject?.(r);
        }
      } else if (seq !== 0 && seq <= durable) acked++;
      else keep.push(e);
    }
    stats.acked += acked;
    entries = keep;
    head = 0;
    sent = 0;
    if (acked > 0 || (refused && refused.size > 0)) {
      if (durable > 0) onAck?.(stats.durableSeq);
      settleFlushes();
    }
  };

  const applyAck = (ack: IngestAck | undefined) => {
    if (!ack) return;
    applyDurable(ack.durableSeq, ack.rejected);
  };

  /** Yields buffered points into the Upload stream until it is time to roll. */
  async function* requests(stop: { rolled: boolean }): AsyncGenerator<UploadRequest> {
    let count = 0;
    while (!stop.rolled && !closed && count < rollPoints) {
      if (head + sent < entries.length) {
        const e = entries[head + sent]!;
        assignSeq(e.p);
        e.sends++;
        sent++;
        count++;
        yield { $typeName: "fleet.v1.UploadRequest", position: e.p };
        continue;
      }
      // Nothing unsent: a flush or close wants the ack now; otherwise wait for more points.
      if (flushing > 0 || closed) return;
      await waitWake();
    }
  }

  /** One Upload stream: send, half-close, process the ack. Throws ConnectError on a broken stream. */
  const runStream = async () => {
    const stop = { rolled: false };
    const abort = new AbortController();
    streamAbort = abort;
    const rollTimer = setTimeout(() => {
      stop.rolled = true;
      signalWake();
    }, rollMs);
    // The ack timeout only runs once the stream half-closed; set below.
    let ackTimer: ReturnType<typeof setTimeout> | undefined;
    try {
      const gen = requests(stop);
      const wrapped = (async function* () {
        yield* gen;
        ackTimer = setTimeout(() => abort.abort(new ConnectError("no ack in time", Code.DeadlineExceeded)), ackTimeoutMs);
      })();
      const res = await client.upload(wrapped, { headers: headers(), signal: abort.signal });
      stats.connected = true;
      attempt = 0;
      const before = stats.durableSeq;
      const hadPending = sent > 0;
      applyAck(res.ack);
      return hadPending && stats.durableSeq === before && (res.ack?.rejected.length ?? 0) === 0;
    } finally {
      clearTimeout(rollTimer);
      if (ackTimer) clearTimeout(ackTimer);
      if (streamAbort === abort) streamAbort = undefined;
      // A generator still parked on a wake-up (the call broke under it) must end, not leak.
      stop.rolled = true;
      signalWake();
      // Everything sent but not covered by an ack is re-sent by the next stream.
      sent = 0;
    }
  };

  const resume = async () => {
    const res = await client.resume(
      { vehicleId },
      {
        headers: headers(),
        timeoutMs: resumeTimeoutMs,
        signal: closing.signal,
      },
    );
    stats.connected = true;
    applyDurable(res.durableSeq, []);
  };

  const retryDelay = (err: ConnectError): number => {
    if (err.code === Code.ResourceExhausted) {
      const ms = Number(err.metadata.get("retry-after-ms"));
      if (Number.isFinite(ms) && ms > 0) return ms;
      const s = Number(err.metadata.get("retry-after"));
      if (Number.isFinite(s) && s > 0) return s * 1000;
    }
    const cap = Math.min(backoffMax, backoffInitial * 2 ** Math.min(attempt, 20));
    attempt++;
    return Math.random() * cap;
  };

  const stopWith = (err: ConnectError) => {
    fatal = err;
    stats.connected = false;
    logger.error("vehicle client stopped", { code: Code[err.code], error: err.rawMessage });
    for (const w of flushWaiters.splice(0)) w.reject(err);
    onError?.(err);
  };

  let authRetried = false;

  const loop = async () => {
    let needResume = true;
    recheckPending = false;
    while (!closed && !fatal) {
      try {
        if (needResume) {
          if (getToken) await refreshToken();
          await resume();
          needResume = false;
          authRetried = false;
        }
        if (buffered() === 0) {
          settleFlushes();
          await waitWake();
          continue;
        }
        const stalled = await runStream();
        authRetried = false;
        if (stalled || recheckPending) await sleep(retryDelay(new ConnectError("no progress", Code.Unavailable)));
        if (recheckPending) {
          recheckPending = false;
          needResume = true;
        }
      } catch (raw) {
        const err = ConnectError.from(raw);
        if (closed) break;
        // A refused or failed call still says how far the vehicle is durable: no Resume needed.
        const told = Number(err.metadata.get(DURABLE_SEQ_TRAILER) ?? Number.NaN);
        const knowsDurable = Number.isInteger(told) && told >= 0 && !FATAL.has(err.code);
        if (knowsDurable) applyDurable(told, []);
        if (FATAL.has(err.code)) {
          if (err.code === Code.Unauthenticated && getToken && !authRetried) {
            // The token may just have expired: one fresh token, then give up.
            authRetried = true;
          } else {
            stopWith(err);
            break;
          }
        }
        stats.connected = false;
        stats.reconnects++;
        // Another gateway may be up where this one is not; one that refused for a reason of its
        // own (RESOURCE_EXHAUSTED with a Retry-After, a lost token) is asked again after the pause.
        const moving = clients.length > 1 && RETRYABLE_SILENTLY.has(err.code);
        if (moving) failover();
        needResume = moving || !knowsDurable;
        const delay = retryDelay(err);
        (RETRYABLE_SILENTLY.has(err.code) ? logger.debug : logger.warn)("ingest stream broke, reconnecting", {
          code: Code[err.code],
          error: err.rawMessage,
          delayMs: Math.round(delay),
          gateway: stats.gateway,
        });
        await sleep(delay);
      }
    }
    loopRunning = false;
  };

  const ensureLoop = () => {
    if (loopRunning || closed || fatal) return;
    loopRunning = true;
    loopDone = loop();
  };

  return {
    vehicleId,
    push(input) {
      if (closed || fatal) return false;
      const p: Position = (input as Position).$typeName === "fleet.v1.Position" ? (input as Position) : create(PositionSchema, input);
      if (!p.vehicleId) p.vehicleId = vehicleId;
      if (!p.recordedAt) p.recordedAt = stampNow();
      entries.push({ p, n: ++pushedCount, sends: 0, recheck: false });
      stats.pushed++;
      if (buffered() > bufferLimit) {
        // Drop the oldest; if it is already in the stream it was sent, and the ack decides its fate.
        if (sent > 0) sent--;
        head++;
        stats.dropped++;
        compact();
        settleFlushes();
      }
      signalWake();
      ensureLoop();
      return true;
    },
    flush() {
      if (fatal) return Promise.reject(fatal);
      const target = pushedCount;
      if (buffered() === 0 || entries[head]!.n > target) return Promise.resolve();
      ensureLoop();
      flushing++;
      return new Promise<void>((resolve, reject) => {
        flushWaiters.push({ target, resolve, reject });
        signalWake();
      }).finally(() => flushing--);
    },
    disconnect() {
      streamAbort?.abort(new ConnectError("disconnected by the application", Code.Unavailable));
    },
    async close() {
      if (closed) return;
      closed = true;
      signalWake();
      cancelSleep();
      const abortLater = setTimeout(
        () => {
          streamAbort?.abort(new ConnectError("client closed", Code.Canceled));
          closing.abort(new ConnectError("client closed", Code.Canceled));
        },
        Math.min(ackTimeoutMs, 5_000),
      );
      await loopDone;
      clearTimeout(abortLater);
      stats.connected = false;
      for (const w of flushWaiters.splice(0)) w.reject(new ConnectError("client closed before the flush finished", Code.Canceled));
    },
    get stats(): VehicleClientStats {
      return { ...stats, buffered: buffered() };
    },
    get error() {
      return fatal;
    },
  };
}
