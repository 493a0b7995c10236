/**
 * IngestService: Upload (client stream), Sync (bidi), Publish (unary), Resume (unary).
 *
 * Per point: same vehicle as the token, validation, dedup against the durable seq (a seq the vehicle
 * skipped is told apart), one point per vehicle and instant, the flood check by the vehicle's own
 * clock, the byte budget (a vehicle over it is read more slowly, not refused), then into the
 * batcher. Points already durable cost nothing against any limit. A point is acked only once the
 * JetStream message holding it is PubAck'd. Nothing here allocates a promise per point: a call is
 * woken once per completed batch. Every call that got as far as its vehicle ends with the vehicle's
 * durable seq in the `fleet-durable-seq` trailer, refused or failed calls too, so that a vehicle
 * knows where to resume without calling Resume.
 *
 * Upload and Sync read their points from a `MessageInput` (lib/grpc/router.ts): pushed by the
 * native gRPC path, or pulled from connect's AsyncIterable for the other protocols. Both run the
 * same handlers below.
 */
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  IngestService,
  RejectReason,
  SyncRequestSchema,
  SyncResponseSchema,
  UploadRequestSchema,
  UploadResponseSchema,
  type IngestAck,
  type Rejection,
  type SyncResponse,
  type UploadResponse,
} from "../gen/fleet/v1/ingest_pb";
import type { Position } from "../gen/fleet/v1/position_pb";
import {
  iterableInput,
  nativeBidiStream,
  nativeClientStream,
  nativeUnaryMethods,
  claimsOf,
  PermissionError,
  RateLimitError,
  ShuttingDownError,
  type MessageInput,
  type MessageSink,
  type NativeMethod,
} from "../lib/grpc";
import type { Logger } from "../lib/log";
import { Counter, type Registry } from "../lib/metrics";
import type { AckSink, Batcher } from "./batcher";
import type { DurableSeqs, VehicleState } from "./durable-seqs";
import { ackResponseEncoder } from "./ack-encoder";
import { pointRequestDecoder } from "./point-decoder";
import { pointBytes, type RateLimiter, type VehicleLimits } from "./rate-limit";
import type { Stoppable, StreamWatch, WatchedStream } from "./stream-watch";
import { validatePosition, type ValidateOptions } from "./validate";

export interface IngestServiceOptions {
  batcher: Batcher;
  seqs: DurableSeqs;
  limiter: RateLimiter;
  /** Idle timeout and drain of the request streams. */
  streams: StreamWatch;
  validate: ValidateOptions;
  /** The limiter's settings, for the messages. */
  limits: { fixRate: number; fixBurst: number; bytesPerSecond: number };
  /**
   * Refusals a call may hold unsent: past it a Sync stops reading until its client takes the ack,
   * and an Upload answers at once (its client sends the rest in its next Upload).
   */
  maxUnsentRejections?: number;
  registry: Registry;
  log: Logger;
  /** True once the gateway drains: new calls are refused. */
  draining: () => boolean;
  /**
   * Awaited before Resume answers: the gateway reads the positions stream up to its end, so that a
   * vehicle moving here from another gateway is not told less than that one made durable (see
   * followPositions's caughtUp). Default: answer at once.
   */
  beforeResume?: () => Promise<unknown>;
}

/** What Upload and Sync read: one position per message. */
type PointInput = MessageInput<{ position?: Position }>;

/** The trailer that tells the vehicle's durable seq at the end of every ingest call, failed ones too. */
export const DURABLE_SEQ_TRAILER = "fleet-durable-seq";

/** A Publish whose vehicle is this far over its byte budget is refused instead of slowed. */
const MAX_PUBLISH_DELAY_MS = 10_000;

/** The IngestService: connect's implementation, and Upload and Sync for the native gRPC path. */
export interface IngestHandlers {
  /** For `router.service(IngestService, service)`. */
  service: ServiceImpl<typeof IngestService>;
  /** Every method for `serve({ nativeMethods })`: the same handlers, fed without connect. */
  nativeMethods: NativeMethod[];
}

/** One call's view of its points; the batcher reports to it. */
class IngestCall implements AckSink {
  batchMark = 0;
  /** Points of this call in flight. */
  pending = 0;
  /** Points made durable since the last ack. */
  accepted = 0;
  /** Refusals since the last ack; made on the first one (most calls never refuse a point). */
  rejected: Rejection[] | undefined;
  /** First publish failure: the call ends with it once its points settled. */
  error: Error | undefined;
  /** ms the vehicle is over its byte budget after the last point taken (0: not over). */
  bytesWait = 0;
  /** Called once the next ack taken went out (a Sync reader waiting for its client to read). */
  onAckTaken: (() => void) | undefined;
  /** onAckTaken of the ack taken last, called by ackSent: the refusals that held the reader are in that ack. */
  private onAckSent: (() => void) | undefined;
  /**
   * Who waits for this call's next news: the resolver of `changed()` (Upload, Publish), or a Sync's
   * response stream, polled in a microtask (see SyncResponses). One field for both: a call lives
   * as long as its stream, and a 13th field took the object from 112 to 160 B.
   */
  private wake: (() => void) | Waiting | undefined;

  constructor(
    readonly fleetId: string,
    readonly state: VehicleState,
    readonly limits: VehicleLimits,
  ) {}

  get vehicleId(): string {
    return this.state.vehicleId;
  }

  /** A Sync's response stream waits for news (undefined: it no longer does). */
  set waiting(w: Waiting | undefined) {
    this.wake = w;
  }
  get waiting(): Waiting | undefined {
    return typeof this.wake === "object" ? this.wake : undefined;
  }

  durable(): void {
    this.pending--;
    this.accepted++;
  }

  failed(err: Error): void {
    this.pending--;
    this.error ??= err;
  }

  settled(): void {
    const w = this.wake;
    if (w === undefined) return;
    this.wake = undefined;
    if (typeof w === "function") w();
    else pollLater(w);
  }

  /** Resolves at the next batch completion (or reader event) touching this call. */
  changed(): Promise<void> {
    return new Promise<void>((resolve) => (this.wake = resolve));
  }

  /** Waits until none of this call's points is in flight. */
  async settle(): Promise<void> {
    while (this.pending > 0) await this.changed();
  }

  get hasNews(): boolean {
    return this.accepted > 0 || this.rejected !== undefined;
  }

  /** The ack of everything since the previous one: a complete message, so no `create` per ack. */
  takeAck(): IngestAck {
    const ack: IngestAck = {
      $typeName: "fleet.v1.IngestAck",
      vehicleId: this.vehicleId,
      durableSeq: this.state.durable,
      accepted: this.accepted,
      rejected: this.rejected ?? [],
    };
    this.accepted = 0;
    this.rejected = undefined;
    this.onAckSent = this.onAckTaken;
    this.onAckTaken = undefined;
    return ack;
  }

  /**
   * The ack taken last went out to the client, or at least into a response stream under its
   * high-water mark: a reader held back for unsent refusals reads on, which may happen at once and
   * add news to this call before this returns.
   */
  ackSent(): void {
    const sent = this.onAckSent;
    if (sent) {
      this.onAckSent = undefined;
      sent();
    }
  }
}

/** What waits for a call's news: polled once in a microtask after it (as an `await` on a promise resolved then would resume). */
interface Waiting {
  poll(): void;
}

// One microtask polls every Sync woken in the same turn (not a function or promise per Sync).
const woken: Waiting[] = [];
let pollScheduled = false;

function pollWoken(): void {
  pollScheduled = false;
  for (let i = 0; i < woken.length; i++) woken[i]!.poll();
  woken.length = 0;
}

function pollLater(w: Waiting): void {
  woken.push(w);
  if (!pollScheduled) {
    pollScheduled = true;
    queueMicrotask(pollWoken);
  }
}

/** Where a Sync's response stream is: before its first ack, after it, reading, after a later ack, over. */
const SYNC_NEW = 0;
const SYNC_FIRST = 1;
const SYNC_READING = 2;
const SYNC_YIELDED = 3;
const SYNC_DONE = 4;

/** What a PointReader needs from the service. */
interface ReaderDeps {
  batcher: Batcher;
  streams: StreamWatch;
  maxUnsentRejections: number;
  /** Takes one point into the call (see createIngestService); throws what ends the stream. */
  take(call: IngestCall, p: Position | undefined, options: TakeOptions): void;
}

/** How one point is taken. */
interface TakeOptions {
  /** The time it arrived (ms since the epoch). */
  now: number;
  /** Its size on the wire, charged to the vehicle's byte budget. */
  bytes: number;
  /** A point of another vehicle ends the call (PermissionError) instead of being refused alone. */
  foreignIsFatal: boolean;
}

/** Why a reader stopped reading for a while: bits, since several may hold at once. */
const NO_ROOM = 1;
const OVER_BYTES = 2;
const ACK_UNREAD = 4;

/**
 * Reads one call's stream of points until it ends, the stream watch stops it (idle, drain), or a
 * point is fatal; then marks itself done and wakes the call. While the batcher has no room, the
 * vehicle is over its byte budget or (Sync) its client leaves too many refusals unread, the input
 * is paused, so HTTP/2 flow control holds the vehicle back.
 *
 * One object per open stream, with methods rather than closures: 10,000 open streams each holding
 * a promise, its resolvers and a handful of callbacks cost more memory than the streams themselves.
 */
class PointReader implements MessageSink<{ position?: Position }>, Stoppable {
  done = false;
  /** Why reading stopped early (fatal point, protocol error, idle timeout); undefined on a clean end or drain. */
  failure: unknown;
  private readonly watched: WatchedStream;
  private roomWaiter: (() => void) | undefined;
  private blocked = 0;
  private bytesTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly call: IngestCall,
    private readonly input: PointInput,
    private readonly deps: ReaderDeps,
    /**
     * Past the unsent refusals bound, end reading and answer (Upload); false: wait for the client to
     * read them (Sync). A flag, not an options object: the reader lives as long as its stream.
     */
    private readonly answerEarly: boolean,
  ) {
    this.watched = deps.streams.watch(this);
    if (deps.batcher.full) this.waitForRoom();
    input.start(this);
  }

  message(msg: { position?: Position }): void {
    if (this.done) return;
    const now = Date.now();
    this.watched.touch(now);
    const call = this.call;
    const p = msg.position;
    try {
      this.deps.take(call, p, { now, bytes: p ? pointBytes(p, msg as { $unknown?: { data: Uint8Array }[] }) : 8, foreignIsFatal: true });
    } catch (err) {
      return this.finish(err);
    }
    if (call.error) return this.finish(undefined);
    if (this.deps.batcher.full) this.waitForRoom();
    if (call.bytesWait > 0 && !(this.blocked & OVER_BYTES)) {
      this.block(OVER_BYTES);
      this.bytesTimer = setTimeout(() => {
        this.bytesTimer = undefined;
        this.unblock(OVER_BYTES);
      }, call.bytesWait);
    }
    if (
      call.rejected !== undefined &&
      call.rejected.length >= this.deps.maxUnsentRejections &&
      call.rejected.at(-1)!.reason !== RejectReason.DUPLICATE
    ) {
      if (this.answerEarly) return this.finish(undefined);
      if (!(this.blocked & ACK_UNREAD)) {
        this.block(ACK_UNREAD);
        call.onAckTaken = () => this.unblock(ACK_UNREAD);
      }
    }
  }

  end(): void {
    this.finish(undefined);
  }

  error(err: unknown): void {
    this.finish(err ?? new Error("stream failed"));
  }

  stop(err: Error | undefined): void {
    this.finish(err);
  }

  private waitForRoom(): void {
    if (this.blocked & NO_ROOM) return;
    this.block(NO_ROOM);
    // Made on first need only: most streams never wait.
    this.roomWaiter ??= () => this.unblock(NO_ROOM);
    this.deps.batcher.whenRoom(this.roomWaiter);
  }

  private block(why: number): void {
    if (this.blocked === 0) {
      this.input.pause();
      this.watched.hold(true);
    }
    this.blocked |= why;
  }

  private unblock(why: number): void {
    if (this.done || !(this.blocked & why)) return;
    this.blocked &= ~why;
    if (this.blocked === 0) {
      this.watched.hold(false);
      // May deliver held messages at once, re-entering message().
      this.input.resume();
    }
  }

  private finish(err: unknown): void {
    if (this.done) return;
    this.done = true;
    if (this.bytesTimer) clearTimeout(this.bytesTimer);
    this.failure = err;
    this.watched.close();
    this.input.stop();
    this.call.settled();
  }
}

/** Creates the IngestService implementation for `router.service(IngestService, impl)`. */
export function createIngestService({
  batcher,
  seqs,
  beforeResume,
  limiter,
  streams,
  validate,
  limits,
  maxUnsentRejections = 1000,
  registry,
  log,
  draining,
}: IngestServiceOptions): IngestHandlers {
  // Counted in plain numbers on the hot path, handed to prom-client when scraped.
  let acceptedTotal = 0;
  const refusedTotals = new Map<string, number>();
  new Counter({
    name: "gateway_points_accepted_total",
    help: "points accepted into a batch",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(acceptedTotal);
    },
  });
  new Counter({
    name: "gateway_points_refused_total",
    help: "points refused, by reason",
    labelNames: ["reason"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [reason, n] of refusedTotals) this.inc({ reason }, n);
    },
  });

  const refuse = (call: IngestCall, seq: number, reason: RejectReason, message: string) => {
    const name = RejectReason[reason] ?? String(reason);
    refusedTotals.set(name, (refusedTotals.get(name) ?? 0) + 1);
    // A re-sent backlog is mostly DUPLICATEs: past the bound they are left to the ack's durable_seq,
    // which covers them, so that re-sending from seq 1 goes through in one call.
    if (reason === RejectReason.DUPLICATE && call.rejected !== undefined && call.rejected.length >= maxUnsentRejections) return;
    (call.rejected ??= []).push({ $typeName: "fleet.v1.Rejection", seq, reason, message });
    // Sync sends rejections with the next ack; wake it in case no batch is coming.
    call.settled();
  };

  let tsMs = 0;
  let ts = timestampFromMs(0);
  /** received_at: one Timestamp per millisecond, shared by the points of that millisecond. */
  const receivedAt = (now: number) => {
    if (now !== tsMs) {
      tsMs = now;
      ts = timestampFromMs(now);
    }
    return ts;
  };

  const begin = (ctx: HandlerContext): IngestCall => {
    if (draining()) throw new ShuttingDownError();
    const claims = claimsOf(ctx);
    if (claims.role !== "vehicle") throw new PermissionError("sending positions needs a vehicle token");
    const state = seqs.state(claims.vehicleId);
    return new IngestCall(claims.fleetId, state, limiter.limits(claims.vehicleId));
  };

  const flooded = (call: IngestCall, seq: number, waitMs: number) =>
    new RateLimitError(
      `vehicle "${call.vehicleId}" sent more than ${limits.fixRate} fixes per second of its recorded time ` +
        `(GATEWAY_MAX_FIX_RATE, burst ${limits.fixBurst}): a flood, seq ${seq} and later not taken; ` +
        `retry in ${Math.ceil(waitMs / 1000)} s from the durable seq in the ${DURABLE_SEQ_TRAILER} trailer`,
      waitMs,
    );

  /** The vehicle's durable seq into the trailers: set before the call ends, whichever way. */
  const tellDurable = (call: IngestCall, ctx: HandlerContext) => ctx.responseTrailer.set(DURABLE_SEQ_TRAILER, String(call.state.durable));

  /**
   * Takes one point that took `bytes` on the wire: refusals go into the call's ack, accepted points
   * into the batcher. Throws PermissionError (another vehicle) when `foreignIsFatal`, RateLimitError
   * on a flood. Sets `call.bytesWait` when the vehicle is over its byte budget. A point already
   * durable (or in flight) is answered without being charged.
   */
  const take = (call: IngestCall, p: Position | undefined, { now, bytes, foreignIsFatal }: TakeOptions) => {
    call.bytesWait = 0;
    if (!p) {
      call.bytesWait = call.limits.takeBytes(bytes, now);
      refuse(call, 0, RejectReason.INVALID_FIELD, "position is missing");
      return;
    }
    if (p.vehicleId !== call.vehicleId && p.vehicleId !== "") {
      if (foreignIsFatal) {
        throw new PermissionError(
          `point seq ${p.seq} is for vehicle "${p.vehicleId.slice(0, 128)}" but the token is for "${call.vehicleId}": send only your own points`,
        );
      }
      refuse(
        call,
        p.seq,
        RejectReason.WRONG_VEHICLE,
        `point is for vehicle "${p.vehicleId.slice(0, 128)}", the token is for "${call.vehicleId}"`,
      );
      return;
    }
    const refusal = validatePosition(p, now, validate);
    if (refusal) {
      call.bytesWait = call.limits.takeBytes(bytes, now);
      refuse(call, p.seq, refusal.reason, refusal.message);
      return;
    }
    const state = call.state;
    if (state.held !== undefined && state.holds(p.seq)) {
      refuse(call, p.seq, RejectReason.DUPLICATE, `seq ${p.seq} is already durable (stored through another gateway)`);
      return;
    }
    if (p.seq <= state.accepted && state.skipped(p.seq)) {
      call.bytesWait = call.limits.takeBytes(bytes, now);
      refuse(
        call,
        p.seq,
        RejectReason.SEQ_SKIPPED,
        `seq ${p.seq} was skipped: later seqs of this vehicle are taken (up to ${state.accepted}) and this one never was; ` +
          `it is not stored: send the point again with a seq above ${state.accepted}`,
      );
      return;
    }
    if (p.seq <= state.durable) {
      refuse(call, p.seq, RejectReason.DUPLICATE, `seq ${p.seq} is already durable (durable seq ${state.durable})`);
      return;
    }
    if (p.seq <= state.accepted) {
      const message = `seq ${p.seq} is not above ${state.accepted}, the last seq accepted for this vehicle: seqs must increase (call Resume after a reconnect)`;
      if (state.inFlight === 0) {
        refuse(call, p.seq, RejectReason.INVALID_FIELD, message);
        return;
      }
      // Maybe sent again while its first send is in flight (the vehicle reconnected before that
      // stream's ack came): this call answers it as that send is answered, durable or not.
      const seq = p.seq;
      call.pending++;
      (state.echoes ??= []).push({
        seq,
        settle: (outcome) => {
          if (outcome === "missing") {
            call.pending--;
            refuse(call, seq, RejectReason.INVALID_FIELD, message);
          } else if (outcome) call.failed(outcome);
          else call.durable();
          call.settled();
        },
      });
      return;
    }
    // Whole milliseconds, as the tracker compares times: two fixes in one millisecond are one instant.
    const t = p.recordedAt!;
    const recordedMs = Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6);
    if (recordedMs === state.lastTime && state.lastSeq === state.accepted && state.lastSeq !== 0) {
      call.bytesWait = call.limits.takeBytes(bytes, now);
      refuse(
        call,
        p.seq,
        RejectReason.DUPLICATE_TIME,
        `recorded_at ${new Date(recordedMs).toISOString()} is the millisecond of seq ${state.lastSeq} already: ` +
          `one fix per vehicle and millisecond, the first is kept and this one is not stored`,
      );
      return;
    }
    const flood = call.limits.takeFix(recordedMs, now);
    if (flood > 0) throw flooded(call, p.seq, flood);
    call.bytesWait = call.limits.takeBytes(bytes, now);
    state.accept(p.seq, recordedMs);
    state.seen = now;
    p.fleetId = call.fleetId;
    p.receivedAt = receivedAt(now);
    call.pending++;
    acceptedTotal++;
    batcher.add(p, state, call);
  };

  const reading: ReaderDeps = { batcher, streams, take, maxUnsentRejections };

  const ackOf = (call: IngestCall) => call.takeAck();

  const upload = async (input: PointInput, ctx: HandlerContext): Promise<UploadResponse> => {
    const call = begin(ctx);
    const reader = new PointReader(call, input, reading, true);
    while (!reader.done) await call.changed();
    // What was accepted before a failure still becomes durable; the vehicle learns how far from
    // the trailer, since a client stream cannot carry both a response and an error.
    await call.settle();
    tellDurable(call, ctx);
    if (reader.failure !== undefined) throw reader.failure;
    if (call.error) throw call.error;
    return { $typeName: "fleet.v1.UploadResponse", ack: ackOf(call) };
  };

  /**
   * Sync's response stream: the ack of the resume point at once, then an ack whenever the call has
   * news (points durable, refusals), until the stream is read to its end and its points settled;
   * the durable seq goes into the trailers, and the call's failure is thrown.
   *
   * What an `async function*` with a loop awaiting `call.changed()` would do, as one object: a
   * suspended async generator held its frames, its body function and a promise with its resolver
   * for the life of the stream, ~300 B of each vehicle's ~5 KB of heap (experiments/h2lite/mem).
   * As a generator does, it starts (begin: drain, token) on the first `next()`, reads from the
   * second on, and takes the next ack only once the previous one was taken (`call.ackSent()`).
   */
  class SyncResponses implements AsyncIterableIterator<SyncResponse>, Waiting {
    private state = SYNC_NEW;
    private call: IngestCall | undefined;
    private reader: PointReader | undefined;
    /** The pending `next()`'s resolver, while the call has no news. */
    private resolve: ((r: IteratorResult<SyncResponse> | Promise<never>) => void) | undefined;

    constructor(
      private readonly input: PointInput,
      private readonly ctx: HandlerContext,
    ) {}

    [Symbol.asyncIterator](): AsyncIterableIterator<SyncResponse> {
      return this;
    }

    next(): Promise<IteratorResult<SyncResponse>> {
      let r: IteratorResult<SyncResponse> | undefined;
      try {
        switch (this.state) {
          case SYNC_NEW: {
            const call = begin(this.ctx);
            this.call = call;
            this.state = SYNC_FIRST;
            // The resume point, right away.
            return Promise.resolve({ value: { $typeName: "fleet.v1.SyncResponse", ack: ackOf(call) }, done: false });
          }
          case SYNC_FIRST:
            this.reader = new PointReader(this.call!, this.input, reading, false);
            break;
          case SYNC_YIELDED:
            // The ack went out (or into a response stream under its high-water mark): a reader held
            // back for unsent refusals reads on, which may add news at once.
            this.call!.ackSent();
            break;
          case SYNC_DONE:
            return Promise.resolve({ value: undefined, done: true });
        }
        this.state = SYNC_READING;
        r = this.step();
      } catch (err) {
        this.state = SYNC_DONE;
        return Promise.reject(err);
      }
      if (r !== undefined) return Promise.resolve(r);
      return new Promise((resolve) => (this.resolve = resolve));
    }

    return(): Promise<IteratorResult<SyncResponse>> {
      this.state = SYNC_DONE;
      this.resolve = undefined;
      if (this.call?.waiting === this) this.call.waiting = undefined;
      return Promise.resolve({ value: undefined, done: true });
    }

    throw(err: unknown): Promise<IteratorResult<SyncResponse>> {
      this.return();
      return Promise.reject(err);
    }

    /** Woken by the call's news: answers the pending `next()` if there is news now. */
    poll(): void {
      const resolve = this.resolve;
      if (resolve === undefined || this.state !== SYNC_READING) return;
      let r: IteratorResult<SyncResponse> | undefined;
      try {
        r = this.step();
      } catch (err) {
        this.resolve = undefined;
        resolve(Promise.reject(err));
        return;
      }
      if (r === undefined) return;
      this.resolve = undefined;
      resolve(r);
    }

    /** The next response if there is one now (throws the call's failure at its end); undefined: wait for news. */
    private step(): IteratorResult<SyncResponse> | undefined {
      const call = this.call!;
      const reader = this.reader!;
      if (call.hasNews) {
        this.state = SYNC_YIELDED;
        return { value: { $typeName: "fleet.v1.SyncResponse", ack: ackOf(call) }, done: false };
      }
      if ((reader.done || call.error) && call.pending === 0) {
        this.state = SYNC_DONE;
        tellDurable(call, this.ctx);
        if (call.error) throw call.error;
        if (reader.failure !== undefined) throw reader.failure;
        return { value: undefined, done: true };
      }
      call.waiting = this;
      return undefined;
    }
  }

  const sync = (input: PointInput, ctx: HandlerContext): AsyncIterable<SyncResponse> => new SyncResponses(input, ctx);

  const service: ServiceImpl<typeof IngestService> = {
    upload: (requests, ctx) => upload(iterableInput(requests), ctx),
    sync: (requests, ctx) => sync(iterableInput(requests), ctx),

    async publish(req, ctx) {
      const call = begin(ctx);
      const n = req.positions.length;
      if (n > 0) {
        // A vehicle already far over its byte budget (many Publishes at once) is refused; one a
        // little over is slowed: its answer waits, and the vehicle's next Publish with it.
        const debt = call.limits.takeBytes(0, Date.now());
        if (debt > MAX_PUBLISH_DELAY_MS) {
          tellDurable(call, ctx);
          throw new RateLimitError(
            `vehicle "${call.vehicleId}" sends more than ${limits.bytesPerSecond} bytes/s (GATEWAY_VEHICLE_BYTES_PER_SECOND): ` +
              `retry in ${Math.ceil(debt / 1000)} s, one Publish at a time`,
            debt,
          );
        }
        const room = batcher.room();
        if (room) await room;
        const now = Date.now();
        try {
          for (const p of req.positions) take(call, p, { now, bytes: pointBytes(p), foreignIsFatal: false });
        } finally {
          // A flood ends the call, but what was taken before it still becomes durable.
          await call.settle();
          tellDurable(call, ctx);
        }
        if (call.error) throw call.error;
        const over = call.limits.takeBytes(0, Date.now());
        if (over > 0) await Bun.sleep(Math.min(over, MAX_PUBLISH_DELAY_MS));
      }
      return { ack: ackOf(call) };
    },

    async resume(req, ctx) {
      const claims = claimsOf(ctx);
      let vehicleId: string;
      if (claims.role === "vehicle") {
        if (req.vehicleId !== "" && req.vehicleId !== claims.vehicleId) {
          throw new PermissionError(`the token is for vehicle "${claims.vehicleId}", not "${req.vehicleId.slice(0, 128)}"`);
        }
        vehicleId = claims.vehicleId;
      } else if (claims.role === "admin" && req.vehicleId !== "") {
        vehicleId = req.vehicleId;
      } else {
        throw new PermissionError("resume needs the vehicle's token (or an admin token naming the vehicle)");
      }
      log.debug("resume", { vehicleId });
      await beforeResume?.();
      return { vehicleId, durableSeq: seqs.resume(vehicleId) };
    },
  };
  return {
    service,
    nativeMethods: [
      ...nativeUnaryMethods(IngestService, service),
      nativeClientStream(
        IngestService.method.upload,
        upload,
        pointRequestDecoder(UploadRequestSchema),
        ackResponseEncoder(UploadResponseSchema),
      ),
      nativeBidiStream(IngestService.method.sync, sync, pointRequestDecoder(SyncRequestSchema), ackResponseEncoder(SyncResponseSchema)),
    ],
  };
}
