/**
 * One watch: subscribe to the live subjects first and buffer, take the snapshot from Redis, drop
 * buffered events that are not newer than the snapshot (per vehicle, by rev), then go live. So there
 * is no gap and no duplicate between snapshot and live events.
 *
 * Live events do not queue: each vehicle has at most one pending update (the latest; `coalesced`
 * counts what it replaced), so a slow client gets the newest position of every vehicle when it
 * reads again. A watch with more pending vehicles than `maxPending`, or whose client took nothing
 * for `maxLagMs` while updates waited, is ended with RESOURCE_EXHAUSTED and a reason.
 *
 * The kind of an event is decided when it is sent, against what the client was told so far:
 * in view and unknown to the client → ENTER; known → MOVE; out of view and known → EXIT (OFFLINE
 * when the vehicle went offline); out of view and unknown → nothing. An EXIT of a vehicle the token
 * no longer grants (it took another order, moved to another fleet) names the vehicle and nothing else.
 */
import { create } from "@bufbuild/protobuf";
import { EventKind, VehicleEventSchema, type VehicleEvent } from "../gen/fleet/v1/tracker_pb";
import type { Logger } from "../lib/log";
import { TooSlowError } from "../lib/grpc";
import type { LiveHub } from "./live-hub";
import type { LiveView } from "./state-codec";
import { bareExit, liveEvent } from "./watch-encoder";

const SNAPSHOT_END: VehicleEvent = Object.freeze(create(VehicleEventSchema, { kind: EventKind.SNAPSHOT_END }));

/** What a watch is about: set by its kind (vehicles or area). */
export interface WatchScope {
  /** Whether the vehicle, in this state, is in view (checked before the grant: keep it cheap). */
  inView(view: LiveView): boolean;
  /** Area watches drop a vehicle that went offline; vehicle watches keep it (and say OFFLINE). */
  keepOffline: boolean;
  /** Called for every live event before anything else (an order watch follows reassignments here). */
  onEvent?(view: LiveView, watch: Watch): void;
}

export interface WatchOptions {
  hub: LiveHub;
  subjects: string[];
  scope: WatchScope;
  /** The token grants this vehicle in this state. */
  visible(view: LiveView): boolean;
  /** Reads the snapshot: every vehicle possibly in view. */
  snapshot(): Promise<LiveView[]>;
  minIntervalMs: number;
  maxPending: number;
  maxLagMs: number;
  signal: AbortSignal;
  log: Logger;
  /** Events sent per message at most. */
  chunk?: number;
  onCoalesced?(): void;
  onSent?(n: number): void;
  /** The watch was ended as too slow (its client hears it when it reads next). */
  onTooSlow?(): void;
  /** Its events started being read, and they ended (whatever the reason). */
  onOpen?(watch: Watch): void;
  onClose?(watch: Watch): void;
}

interface Pending {
  view: LiveView;
  inView: boolean;
  /** Out of view because the token no longer grants it: its EXIT carries no state. */
  hidden: boolean;
  coalesced: number;
}

/**
 * The longest timer Node and Bun keep: a longer one fires after 1 ms (TimeoutOverflowWarning), so a
 * min_interval_ms of 2^32 - 1 (it is a uint32) made a watch wake every millisecond. Clamped to it.
 */
export const MAX_MIN_INTERVAL_MS = 2 ** 31 - 1;

/** rev is a u32 that wraps: a is newer than b when a - b is in (0, 2^31). */
const newer = (a: number, b: number) => {
  const d = (a - b) >>> 0;
  return d !== 0 && d < 0x80000000;
};

export class Watch {
  private subjects = new Set<string>();
  private readonly listener = (view: LiveView) => this.receive(view);
  private buffer: LiveView[] | undefined = [];
  private lastRev = new Map<string, number>();
  /** Vehicles the client knows as in view, with when it was last sent an update. */
  private known = new Map<string, number>();
  private pending = new Map<string, Pending>();
  private failure: Error | undefined;
  private wake: (() => void) | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** When the current send started waiting for the client (0: not waiting). */
  waitingSince = 0;
  /** When the last message was handed to the client (a heartbeat counts). */
  private lastSentAt = Date.now();
  /** `heartbeat` found the watch idle: the loop sends a message with no events when it wakes. */
  private heartbeatDue = false;
  private closed = false;
  private readonly minIntervalMs: number;

  constructor(private readonly o: WatchOptions) {
    this.minIntervalMs = Math.min(Math.max(0, o.minIntervalMs), MAX_MIN_INTERVAL_MS);
    for (const s of o.subjects) this.subscribe(s);
  }

  /** Subscribes to one more subject (an order watch switching vehicle). */
  subscribe(subject: string): void {
    if (this.subjects.has(subject) || this.closed) return;
    this.subjects.add(subject);
    this.o.hub.add(subject, this.listener);
  }

  unsubscribe(subject: string): void {
    if (this.subjects.delete(subject)) this.o.hub.remove(subject, this.listener);
  }

  private receive(view: LiveView): void {
    if (this.closed) return;
    if (this.buffer) {
      this.buffer.push(view);
      if (this.buffer.length > this.o.maxPending * 4)
        this.fail(new TooSlowError(`watch fell behind while taking its snapshot (${this.buffer.length} events): narrow it`));
      return;
    }
    this.apply(view);
  }

  private apply(view: LiveView): void {
    const id = view.vehicleId;
    const last = this.lastRev.get(id);
    if (last !== undefined && !newer(view.rev, last)) return;
    this.o.scope.onEvent?.(view, this);
    const inView = (view.online || this.o.scope.keepOffline) && this.o.scope.inView(view) && this.o.visible(view);
    // Most events an area watch receives are of vehicles passing by its cells, never shown and not
    // pending: those have no rev here (known and pending vehicles always do), so nothing to do.
    if (!inView && last === undefined) return;
    if (!inView && !this.known.has(id) && !this.pending.has(id)) {
      // Out of view and never shown: forget it (an area watch would otherwise remember every passer-by).
      this.lastRev.delete(id);
      return;
    }
    this.lastRev.set(id, view.rev);
    // Asked again only for a vehicle the client knows that is leaving view (rare).
    this.enqueue(view, inView, !inView && !this.o.visible(view));
  }

  private enqueue(view: LiveView, inView: boolean, hidden: boolean): void {
    const vehicleId = view.vehicleId;
    const p = this.pending.get(vehicleId);
    if (p) {
      p.view = view;
      p.inView = inView;
      p.hidden = hidden;
      p.coalesced++;
      this.o.onCoalesced?.();
    } else {
      this.pending.set(vehicleId, { view, inView, hidden, coalesced: 0 });
      if (this.pending.size > this.o.maxPending) {
        this.fail(
          new TooSlowError(
            `watch client reads too slowly: more than ${this.o.maxPending} vehicles wait; read faster, set min_interval_ms or narrow the watch`,
          ),
        );
        return;
      }
    }
    this.poke();
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** Ends the watch with an error (sent when the client reads next). */
  fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    if (err instanceof TooSlowError) this.o.onTooSlow?.();
    this.close();
    this.poke();
  }

  /** Called periodically: ends a watch whose client took nothing for too long while updates wait. */
  checkLag(now: number): void {
    if (this.waitingSince > 0 && this.pending.size > 0 && now - this.waitingSince > this.o.maxLagMs) {
      this.fail(
        new TooSlowError(`watch client took nothing for ${Math.round((now - this.waitingSince) / 1000)} s while updates waited: reconnect`),
      );
    }
  }

  /**
   * Called periodically: a live watch that sent nothing for `intervalMs` sends a message with no
   * events. A tracker that stopped (SIGSTOP, a partition) keeps its TCP connection open and sends
   * nothing, which a client cannot tell from vehicles standing still: with a heartbeat it can
   * (client/live's idle timeout); a browser cannot send HTTP/2 PINGs of its own.
   */
  heartbeat(now: number, intervalMs: number): void {
    if (this.wake === undefined || now - this.lastSentAt < intervalMs) return;
    this.heartbeatDue = true;
    this.poke();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.subjects) this.o.hub.remove(s, this.listener);
    this.subjects.clear();
    if (this.timer) clearTimeout(this.timer);
  }

  /** Events ready to send now; schedules a wake for those held back by min_interval_ms. */
  private take(now: number, max: number): VehicleEvent[] {
    const out: VehicleEvent[] = [];
    let nextDue = Infinity;
    for (const [id, p] of this.pending) {
      if (out.length >= max) break;
      const lastSent = this.known.get(id);
      let kind: EventKind;
      if (p.inView) {
        if (!p.view.online) kind = EventKind.OFFLINE;
        else if (lastSent === undefined) kind = EventKind.ENTER;
        else {
          kind = EventKind.MOVE;
          const due = lastSent + this.minIntervalMs;
          if (due > now) {
            nextDue = Math.min(nextDue, due);
            continue;
          }
        }
        this.known.set(id, now);
      } else {
        this.pending.delete(id);
        if (lastSent === undefined) continue;
        this.known.delete(id);
        this.lastRev.delete(id);
        if (p.hidden) {
          out.push(bareExit(id));
          continue;
        }
        kind = p.view.online ? EventKind.EXIT : EventKind.OFFLINE;
        out.push(liveEvent(kind, p.view, p.coalesced));
        continue;
      }
      this.pending.delete(id);
      out.push(liveEvent(kind, p.view, p.coalesced));
    }
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (out.length === 0 && nextDue < Infinity) this.timer = setTimeout(() => this.poke(), nextDue - now);
    return out;
  }

  /**
   * The watch's messages, each made by `message` from its events: snapshot events, SNAPSHOT_END,
   * then live events until the call ends. One generator from here to the RPC (no generator per
   * message, none per layer): at tens of thousands of messages a second each layer is felt.
   */
  async *events<M>(message: (events: VehicleEvent[]) => M): AsyncGenerator<M> {
    const { signal } = this.o;
    const onAbort = () => {
      this.close();
      this.poke();
    };
    signal.addEventListener("abort", onAbort);
    const chunk = this.o.chunk ?? 500;
    this.o.onOpen?.(this);
    try {
      const snapshot: ({ message: M; events: number } | undefined)[] = await this.snapshotMessages(message, chunk);
      for (let i = 0; i < snapshot.length; i++) {
        const { message: m, events } = snapshot[i]!;
        snapshot[i] = undefined;
        this.waitingSince = Date.now();
        yield m;
        this.sent(events);
      }
      snapshot.length = 0;
      this.goLive();
      while (!signal.aborted) {
        if (this.failure) throw this.failure;
        const ready = this.take(Date.now(), chunk);
        if (ready.length > 0) {
          // While the client has not taken this message, checkLag may end the watch.
          this.waitingSince = Date.now();
          yield message(ready);
          this.sent(ready.length);
          continue;
        }
        if (this.closed) break;
        if (this.heartbeatDue) {
          this.heartbeatDue = false;
          this.waitingSince = Date.now();
          yield message([]);
          this.sent(0);
          continue;
        }
        await new Promise<void>((resolve) => (this.wake = resolve));
      }
      if (this.failure) throw this.failure;
      // The client went away: the call ends as cancelled (rpc_calls_total, the log), not as done.
      if (signal.aborted) throw signal.reason;
    } finally {
      signal.removeEventListener("abort", onAbort);
      this.close();
      this.o.onClose?.(this);
    }
  }

  /**
   * The snapshot as messages of at most `chunk` events, SNAPSHOT_END last, with their event counts.
   * Built here, outside the generator, and let go by it one by one as they are sent: what a
   * generator's frame holds stays for as long as the watch lasts (JavaScriptCore keeps awaited
   * values, for-of iterators and a `yield*`'s finished generator there). Held, the snapshots of a
   * city's area watches (a thousand vehicles each, with records, decoded states and encoded events)
   * filled a bench's watch server with 194,000 of them (190 MB) that every full collection marked again.
   */
  private async snapshotMessages<M>(message: (events: VehicleEvent[]) => M, chunk: number): Promise<{ message: M; events: number }[]> {
    const views = await this.o.snapshot();
    const messages: { message: M; events: number }[] = [];
    let out: VehicleEvent[] = [];
    for (const view of views) {
      const vehicleId = view.vehicleId;
      this.lastRev.set(vehicleId, view.rev);
      if (!(view.online || this.o.scope.keepOffline) || !this.o.scope.inView(view) || !this.o.visible(view)) continue;
      this.known.set(vehicleId, 0);
      out.push(liveEvent(EventKind.SNAPSHOT, view, 0));
      if (out.length >= chunk) {
        messages.push({ message: message(out), events: out.length });
        out = [];
      }
    }
    out.push(SNAPSHOT_END);
    messages.push({ message: message(out), events: out.length });
    return messages;
  }

  /** Applies what was buffered while the snapshot was read and sent; from now on events apply as they come. */
  private goLive(): void {
    const buffered = this.buffer ?? [];
    this.buffer = undefined;
    for (const e of buffered) this.apply(e);
  }

  private sent(n: number): void {
    this.waitingSince = 0;
    this.lastSentAt = Date.now();
    this.o.onSent?.(n);
  }
}
