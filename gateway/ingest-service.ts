/**
 * IngestService: Upload (client stream), Sync (bidi), Publish (unary), Resume (unary).
 *
 * Per point: same vehicle as the token, rate limit, validation, dedup against the durable seq,
 * then into the batcher. A point is acked only once the JetStream message holding it is PubAck'd.
 * Nothing here allocates a promise per point: a call is woken once per completed batch.
 *
 * Upload and Sync read their points from a `MessageInput` (lib/grpc-stream.ts): pushed by the
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
import { iterableInput, nativeBidiStream, nativeClientStream, nativeUnaryMethods, type MessageInput, type MessageSink, type NativeMethod } from "../lib/grpc-stream";
import type { Logger } from "../lib/log";
import { Counter, type Registry } from "../lib/metrics";
import { claimsOf, PermissionError, RateLimitError, ShuttingDownError } from "../lib/rpc";
import type { AckSink, Batcher } from "./batcher";
import type { DurableSeqs, VehicleState } from "./durable-seqs";
import { ackResponseEncoder } from "./ack-encoder";
import { pointRequestDecoder } from "./point-decoder";
import type { Bucket, RateLimiter } from "./rate-limit";
import type { Stoppable, StreamWatch, WatchedStream } from "./stream-watch";
import { validatePosition, type ValidateOptions } from "./validate";

export interface IngestServiceOptions {
  batcher: Batcher;
  seqs: DurableSeqs;
  limiter: RateLimiter;
  /** Idle timeout and drain of the request streams. */
  streams: StreamWatch;
  validate: ValidateOptions;
  /** Points per second one vehicle may send (for the retry message). */
  rateLimit: number;
  registry: Registry;
  log: Logger;
  /** True once the gateway drains: new calls are refused. */
  draining: () => boolean;
}

/** What Upload and Sync read: one position per message. */
type PointInput = MessageInput<{ position?: Position }>;

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
  private wake: (() => void) | undefined;

  constructor(
    readonly vehicleId: string,
    readonly fleetId: string,
    readonly state: VehicleState,
    readonly bucket: Bucket,
  ) {}

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
    if (w) {
      this.wake = undefined;
      w();
    }
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
    return ack;
  }
}

/** What a PointReader needs from the service. */
interface ReaderDeps {
  batcher: Batcher;
  streams: StreamWatch;
  /** Takes one point into the call (see createIngestService); throws what ends the stream. */
  take(call: IngestCall, p: Position | undefined, now: number, foreignIsFatal: boolean, rateChecked: boolean): void;
}

/**
 * Reads one call's stream of points until it ends, the stream watch stops it (idle, drain), or a
 * point is fatal; then marks itself done and wakes the call. While the batcher has no room the
 * input is paused, so HTTP/2 flow control holds the vehicle back.
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

  constructor(
    private readonly call: IngestCall,
    private readonly input: PointInput,
    private readonly deps: ReaderDeps,
  ) {
    this.watched = deps.streams.watch(this);
    if (deps.batcher.full) this.waitForRoom();
    input.start(this);
  }

  message(msg: { position?: Position }): void {
    if (this.done) return;
    const now = Date.now();
    this.watched.touch(now);
    try {
      this.deps.take(this.call, msg.position, now, true, false);
    } catch (err) {
      return this.finish(err);
    }
    if (this.call.error) return this.finish(undefined);
    if (this.deps.batcher.full) this.waitForRoom();
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
    this.input.pause();
    this.watched.hold(true);
    // Made on first need only: most streams never wait.
    this.roomWaiter ??= () => {
      if (this.done) return;
      this.watched.hold(false);
      this.input.resume();
    };
    this.deps.batcher.whenRoom(this.roomWaiter);
  }

  private finish(err: unknown): void {
    if (this.done) return;
    this.done = true;
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
  limiter,
  streams,
  validate,
  rateLimit,
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
    (call.rejected ??= []).push({ $typeName: "fleet.v1.Rejection", seq, reason, message });
    const name = RejectReason[reason] ?? String(reason);
    refusedTotals.set(name, (refusedTotals.get(name) ?? 0) + 1);
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
    return new IngestCall(claims.vehicleId, claims.fleetId, state, limiter.bucket(claims.vehicleId));
  };

  const rateLimited = (call: IngestCall, waitMs: number, points: number) =>
    new RateLimitError(
      `rate limit of ${rateLimit} points/s for vehicle "${call.vehicleId}" exceeded` +
        (points > 1 ? ` by a batch of ${points}` : "") +
        (Number.isFinite(waitMs) ? `: retry in ${(waitMs / 1000).toFixed(1)} s` : ": batch larger than the burst, split it"),
      Number.isFinite(waitMs) ? waitMs : 60_000,
    );

  /**
   * Takes one point: refusals go into the call's ack, accepted points into the batcher.
   * Throws PermissionError (another vehicle) when `foreignIsFatal`, RateLimitError past the limit.
   */
  const take = (call: IngestCall, p: Position | undefined, now: number, foreignIsFatal: boolean, rateChecked: boolean) => {
    if (!p) {
      refuse(call, 0, RejectReason.INVALID_FIELD, "position is missing");
      return;
    }
    if (p.vehicleId !== call.vehicleId && p.vehicleId !== "") {
      if (foreignIsFatal) {
        throw new PermissionError(
          `point seq ${p.seq} is for vehicle "${p.vehicleId.slice(0, 128)}" but the token is for "${call.vehicleId}": send only your own points`,
        );
      }
      refuse(call, p.seq, RejectReason.WRONG_VEHICLE, `point is for vehicle "${p.vehicleId.slice(0, 128)}", the token is for "${call.vehicleId}"`);
      return;
    }
    if (!rateChecked) {
      const wait = call.bucket.take(1, now);
      if (wait > 0) throw rateLimited(call, wait, 1);
    }
    const refusal = validatePosition(p, now, validate);
    if (refusal) {
      refuse(call, p.seq, refusal.reason, refusal.message);
      return;
    }
    const state = call.state;
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
    state.accepted = p.seq;
    state.seen = now;
    p.fleetId = call.fleetId;
    p.receivedAt = receivedAt(now);
    call.pending++;
    acceptedTotal++;
    batcher.add(p, state, call);
  };

  const reading: ReaderDeps = { batcher, streams, take };

  const ackOf = (call: IngestCall) => call.takeAck();

  const upload = async (input: PointInput, ctx: HandlerContext): Promise<UploadResponse> => {
    const call = begin(ctx);
    const reader = new PointReader(call, input, reading);
    while (!reader.done) await call.changed();
    // What was accepted before a failure still becomes durable; the vehicle learns how far
    // through Resume, since a client stream cannot carry both a response and an error.
    await call.settle();
    if (reader.failure !== undefined) throw reader.failure;
    if (call.error) throw call.error;
    return { $typeName: "fleet.v1.UploadResponse", ack: ackOf(call) };
  };

  async function* sync(input: PointInput, ctx: HandlerContext): AsyncIterable<SyncResponse> {
    const call = begin(ctx);
    // The resume point, right away.
    yield { $typeName: "fleet.v1.SyncResponse", ack: ackOf(call) };
    const reader = new PointReader(call, input, reading);
    for (;;) {
      if (call.hasNews) yield { $typeName: "fleet.v1.SyncResponse", ack: ackOf(call) };
      if ((reader.done || call.error) && call.pending === 0) break;
      await call.changed();
    }
    if (call.error) throw call.error;
    if (reader.failure !== undefined) throw reader.failure;
  }

  const service: ServiceImpl<typeof IngestService> = {
    upload: (requests, ctx) => upload(iterableInput(requests), ctx),
    sync: (requests, ctx) => sync(iterableInput(requests), ctx),

    async publish(req, ctx) {
      const call = begin(ctx);
      const n = req.positions.length;
      if (n > 0) {
        const wait = call.bucket.take(n, Date.now());
        if (wait > 0) throw rateLimited(call, wait, n);
        const room = batcher.room();
        if (room) await room;
        const now = Date.now();
        for (const p of req.positions) take(call, p, now, false, true);
        await call.settle();
        if (call.error) throw call.error;
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
      return { vehicleId, durableSeq: seqs.durableSeq(vehicleId) };
    },
  };
  return {
    service,
    nativeMethods: [
      ...nativeUnaryMethods(IngestService, service),
      nativeClientStream(IngestService.method.upload, upload, pointRequestDecoder(UploadRequestSchema), ackResponseEncoder(UploadResponseSchema)),
      nativeBidiStream(IngestService.method.sync, sync, pointRequestDecoder(SyncRequestSchema), ackResponseEncoder(SyncResponseSchema)),
    ],
  };
}
