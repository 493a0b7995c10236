/**
 * The typed live client: the tracker's watches and queries and history's tracks and replays, for a
 * browser (Connect over fetch, HTTP/1.1) or Bun and Node (any connect Transport, e.g.
 * connect-node's gRPC one).
 *
 * A watch survives its server: when the stream breaks it waits (backoff with full jitter; the first
 * retry after a live stream at once, on the next tracker if there are several), opens the same
 * watch again, and hands on from the new snapshot only what is newer than what the app already has
 * (resume.ts). A token, permission or request error ends it instead: retrying would only be
 * refused again. Every call takes an AbortSignal, and every error is a LiveError.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient, type CallOptions, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { HistoryService, type ReplayRequestSchema } from "../../gen/fleet/v1/history_pb";
import type { VehicleStatus } from "../../gen/fleet/v1/position_pb";
import { EventKind, TrackerService, type VehicleEvent } from "../../gen/fleet/v1/tracker_pb";
import { abortedError, LiveError, toLiveError } from "./errors";
import { ResumeFilter, type ResumeStats } from "./resume";
import {
  areaMessage,
  pointOf,
  vehicleOf,
  type ConnectionState,
  type LiveArea,
  type LiveEvent,
  type LiveVehicle,
  type TrackPoint,
} from "./types";

/**
 * Work a watch does in one go before it lets the event loop run (a page's input, its timers). The
 * tracker sends up to 500 events a message and a read may hold many: a dashboard's 100,000-vehicle
 * snapshot was decoded and applied in tasks of 70-350 ms (bench web's long tasks), with input
 * waiting that long. Between two events, once this much time went by, the loop yields.
 */
const SLICE_MS = 8;

/** Lets the event loop run (input, timers, rendering) and resumes soon after: scheduler.yield where there is one. */
function yieldToEventLoop(): Promise<void> {
  const s = (globalThis as { scheduler?: { yield?: () => Promise<void> } }).scheduler;
  if (typeof s?.yield === "function") return s.yield();
  if (typeof setImmediate === "function") return new Promise((r) => setImmediate(r));
  // A message is not clamped to 4 ms as a nested setTimeout is.
  return new Promise((r) => {
    const c = new MessageChannel();
    c.port1.onmessage = () => {
      c.port1.close();
      r();
    };
    c.port2.postMessage(null);
  });
}

/** Three of the tracker's default heartbeats (TRACKER_WATCH_HEARTBEAT, 10 s) and some slack. */
const DEFAULT_IDLE_TIMEOUT_MS = 35_000;

export interface LiveClientOptions {
  /** The tracker's base URL, or several trackers' (a watch or call moves to the next when one fails). */
  baseUrl: string | readonly string[];
  /** History's base URL(s), for `track` and `replay`. */
  historyUrl?: string | readonly string[];
  /** A watch token (`fleet token watch …`). Either this or `getToken`. */
  token?: string;
  /** Called for every call and every (re)connect: return a current token (refreshed before it expires). */
  getToken?: () => string | Promise<string>;
  /**
   * Transports to use instead of Connect over fetch: one, or one per `baseUrl` (same order). In Bun
   * or Node, e.g. `createGrpcTransport({ baseUrl })` from @connectrpc/connect-node.
   */
  transport?: Transport | readonly Transport[];
  /** The same for `historyUrl`. */
  historyTransport?: Transport | readonly Transport[];
  /** Reconnect delay of watches: full jitter, random(0, min(maxMs, initialMs·2^failures)). */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Deadline of one unary call (default 10 s). */
  timeoutMs?: number;
}

export interface WatchHandlers {
  /** Ends the watch (state `closed`, no error). */
  signal?: AbortSignal;
  /** Every event handed on, in order. */
  onEvent?(event: LiveEvent): void;
  /** Every vehicle state handed on (snapshot, enter, move, offline): the simplest way to follow one. */
  onState?(vehicle: LiveVehicle): void;
  /** The connection's state changed; `error` is why it is reconnecting or closed. */
  onConnection?(state: ConnectionState, error?: LiveError): void;
  /** The error that ended the watch (not retried: a token, permission or request problem). */
  onError?(error: LiveError): void;
  /**
   * Break and reopen a stream that said nothing for this long (0: never). Default 35 s: the tracker
   * sends a response with no events after TRACKER_WATCH_HEARTBEAT (10 s by default) of silence, so
   * a stream quiet for three heartbeats is a tracker that stopped answering (a stopped process, a
   * partition) whose connection is still open. Against a tracker with a longer heartbeat, raise it.
   */
  idleTimeoutMs?: number;
}

export interface WatchOptions extends WatchHandlers {
  /** Least time between two updates of one vehicle; 0 (default) sends every update. */
  minIntervalMs?: number;
}

export interface AreaWatchOptions extends WatchOptions {
  /** Only vehicles with one of these statuses; empty or absent: all. */
  statuses?: readonly VehicleStatus[];
}

export interface WatchStats extends ResumeStats {
  /** Times the watch was opened again after a break. */
  reconnects: number;
  /** Snapshots completed (the first and one per resume). */
  snapshots: number;
  /** Events handed on. */
  events: number;
}

/**
 * An open watch. Iterate it (`for await (const e of watch)`) or pass handlers; not both. Iterating
 * pulls from the stream as the loop reads (the tracker coalesces a slow reader's updates).
 */
export interface LiveWatch extends AsyncIterable<LiveEvent> {
  readonly state: ConnectionState;
  readonly stats: Readonly<WatchStats>;
  /** The vehicles in view now, as handed on. */
  vehicles(): Map<string, LiveVehicle>;
  /** Index into `baseUrl` of the tracker in use. */
  readonly tracker: number;
  /** Resolves when the watch is closed: undefined when closed by the caller, else its error. */
  readonly done: Promise<LiveError | undefined>;
  close(): void;
}

export interface CallOpts {
  signal?: AbortSignal;
}

export interface NearbyOptions extends CallOpts {
  statuses?: readonly VehicleStatus[];
  /** Most vehicles returned (server default 50). */
  limit?: number;
}

export interface TrackOptions extends CallOpts {
  from: Date | number;
  to: Date | number;
  /** Budget of points (server default 1,000): the track is simplified to it. */
  maxPoints?: number;
}

export interface ReplayOptions extends CallOpts {
  from: Date | number;
  to: Date | number;
  /** 1: the original pace; 10: ten times faster. */
  speed?: number;
}

export interface LiveClient {
  /** Watches one vehicle (or several ids): its snapshot, then every move and OFFLINE. */
  watchVehicle(vehicleId: string | readonly string[], options?: WatchOptions): LiveWatch;
  /** Watches the vehicle serving an order (`fleet/order`), following a reassignment. */
  watchOrder(orderId: string, options?: WatchOptions): LiveWatch;
  /** Watches an area: ENTER, MOVE, EXIT and OFFLINE of the vehicles the token grants. */
  watchArea(area: LiveArea, options?: AreaWatchOptions): LiveWatch;
  getVehicle(vehicleId: string, options?: CallOpts): Promise<LiveVehicle>;
  nearby(area: LiveArea, options?: NearbyOptions): Promise<{ vehicle: LiveVehicle; distanceM: number }[]>;
  countByStatus(options?: CallOpts & { fleetId?: string }): Promise<Map<VehicleStatus, number>>;
  /** Sets a vehicle's status (a dispatcher's token); `orderId` with ON_DELIVERY. */
  setStatus(vehicleId: string, status: VehicleStatus, options?: CallOpts & { orderId?: string }): Promise<LiveVehicle>;
  /** A vehicle's track between two times, simplified to `maxPoints` (history). */
  track(vehicleId: string, options: TrackOptions): Promise<{ points: TrackPoint[]; totalPoints: number }>;
  /**
   * Replays a vehicle's or an area's points at `speed` × their pace, in the batches history sends
   * them; a break opens it again on the next history server from the last point handed on.
   */
  replay(target: { vehicleId: string } | { area: LiveArea }, options: ReplayOptions): AsyncIterable<TrackPoint[]>;
}

/** Breaks in a row, with no new point between them, after which a replay gives up. */
const MAX_REPLAY_BREAKS = 5;

const list = <T>(v: T | readonly T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? [...(v as T[])] : [v as T]);
const ms = (t: Date | number) => (typeof t === "number" ? t : t.getTime());

/** A pause that an abort ends early. */
function sleep(delayMs: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, delayMs);
    signal.addEventListener("abort", done, { once: true });
  });
}

function liveEventOf(e: VehicleEvent): LiveEvent | undefined {
  switch (e.kind) {
    case EventKind.SNAPSHOT_END:
      return { kind: "snapshotEnd", resumed: false };
    case EventKind.EXIT: {
      const vehicle = e.vehicle?.position ? vehicleOf(e.vehicle) : undefined;
      return { kind: "exit", vehicleId: e.vehicle?.position?.vehicleId ?? "", vehicle };
    }
    case EventKind.SNAPSHOT:
    case EventKind.ENTER:
    case EventKind.MOVE:
    case EventKind.OFFLINE: {
      if (!e.vehicle?.position) return undefined;
      const kind = (
        { [EventKind.SNAPSHOT]: "snapshot", [EventKind.ENTER]: "enter", [EventKind.MOVE]: "move", [EventKind.OFFLINE]: "offline" } as const
      )[e.kind];
      const vehicle = vehicleOf(e.vehicle);
      if (e.kind === EventKind.OFFLINE) vehicle.online = false;
      return { kind, vehicle, coalesced: e.coalesced };
    }
    default:
      return undefined;
  }
}

/** Creates a client of one platform's trackers (and history). */
export function createLiveClient({
  baseUrl,
  historyUrl,
  token,
  getToken,
  transport,
  historyTransport,
  backoff: { initialMs = 250, maxMs = 15_000 } = {},
  timeoutMs = 10_000,
}: LiveClientOptions): LiveClient {
  const trackerUrls = list(baseUrl);
  const trackerTransports = list(transport);
  if (trackerUrls.length === 0 && trackerTransports.length === 0)
    throw new Error("createLiveClient: give baseUrl (the tracker's URL) or a transport");
  if (token === undefined && getToken === undefined) throw new Error("createLiveClient: give a token or getToken");
  const makeClients = <S extends typeof TrackerService | typeof HistoryService>(
    service: S,
    urls: string[],
    given: Transport[],
  ): Client<S>[] =>
    given.length > 0
      ? given.map((t) => createClient(service, t))
      : urls.map((u) => createClient(service, createConnectTransport({ baseUrl: u, useBinaryFormat: true })));
  const trackers = makeClients(TrackerService, trackerUrls, trackerTransports);
  const histories = makeClients(HistoryService, list(historyUrl), list(historyTransport));
  // The server that answered last: the next call starts there.
  let trackerIndex = 0;
  let historyIndex = 0;

  const headers = async (): Promise<Record<string, string>> => ({ authorization: `Bearer ${getToken ? await getToken() : token}` });
  /** A token refused as expired or invalid may be cured by a fresh one, when the app can give one. */
  const tokenMayRefresh = (e: LiveError) => getToken !== undefined && (e.code === "token-expired" || e.code === "unauthenticated");

  /** One unary call, moved to the next server when one cannot be reached (each tried once). */
  async function unary<S extends typeof TrackerService | typeof HistoryService, R>(
    what: string,
    clients: Client<S>[],
    which: "tracker" | "history",
    signal: AbortSignal | undefined,
    call: (c: Client<S>, opts: CallOptions) => Promise<R>,
  ): Promise<R> {
    if (clients.length === 0) throw new LiveError("invalid-argument", `${what}: no ${which} URL: pass historyUrl to createLiveClient`);
    let last: LiveError | undefined;
    let refreshed = false;
    const start = which === "tracker" ? trackerIndex : historyIndex;
    for (let i = 0; i < clients.length; i++) {
      const index = (start + i) % clients.length;
      if (signal?.aborted) throw abortedError(what);
      try {
        const r = await call(clients[index]!, { headers: await headers(), signal, timeoutMs });
        if (which === "tracker") trackerIndex = index;
        else historyIndex = index;
        return r;
      } catch (err) {
        if (signal?.aborted) throw abortedError(what);
        last = toLiveError(err, what);
        if (!refreshed && tokenMayRefresh(last)) {
          // Once more on the same server, with what getToken gives now.
          refreshed = true;
          i--;
          continue;
        }
        if (last.code !== "unavailable") throw last;
      }
    }
    throw last!;
  }

  /**
   * The reconnecting watch of one request: `open` starts one stream on a tracker. With handlers it
   * runs at once; otherwise when iterated.
   */
  function watch(
    what: string,
    handlers: WatchHandlers,
    open: (c: Client<typeof TrackerService>, opts: CallOptions) => AsyncIterable<{ events: VehicleEvent[] }>,
  ): LiveWatch {
    const abort = new AbortController();
    const { signal: outer, onEvent, onState, onConnection, onError, idleTimeoutMs = DEFAULT_IDLE_TIMEOUT_MS } = handlers;
    if (outer) {
      if (outer.aborted) abort.abort();
      else outer.addEventListener("abort", () => abort.abort(), { once: true });
    }
    const filter = new ResumeFilter();
    const stats: WatchStats = {
      reconnects: 0,
      snapshots: 0,
      events: 0,
      get duplicates() {
        return filter.stats.duplicates;
      },
      get regressions() {
        return filter.stats.regressions;
      },
    };
    let state: ConnectionState = "connecting";
    let tracker = trackerIndex;
    let resolveDone!: (e: LiveError | undefined) => void;
    const done = new Promise<LiveError | undefined>((r) => {
      resolveDone = r;
    });
    /**
     * Calls the app's handler; a handler that throws is the app's bug, not a broken stream: it is
     * logged to the console and the watch goes on (rethrown, it would reopen the watch in a loop).
     */
    const guarded = (fn: () => void) => {
      try {
        fn();
      } catch (err) {
        console.error(`${what}: a handler threw; the watch goes on:`, err);
      }
    };
    const setState = (next: ConnectionState, error?: LiveError) => {
      if (state === next && !error) return;
      state = next;
      if (onConnection) guarded(() => onConnection(next, error));
    };
    const handOn = (out: LiveEvent) => {
      if (onEvent) guarded(() => onEvent(out));
      if (onState && out.kind !== "exit" && out.kind !== "snapshotEnd") guarded(() => onState(out.vehicle));
    };

    async function* run(): AsyncGenerator<LiveEvent> {
      // Breaks since the last live stream: the backoff grows with them. After a live stream broke
      // the pause is short (another tracker holds the same state), but still jittered, so that the
      // watchers of a dead tracker do not all arrive at once.
      let failures = 0;
      let final: LiveError | undefined;
      // A token refusal since the last live stream was already met with a fresh token from getToken.
      let refreshed = false;
      try {
        for (let opened = 0; !abort.signal.aborted; opened++) {
          if (opened > 0) {
            stats.reconnects++;
            await sleep(Math.random() * Math.min(maxMs, initialMs * 2 ** failures), abort.signal);
            if (abort.signal.aborted) break;
          }
          filter.restart();
          const stream = new AbortController();
          const stop = () => stream.abort();
          abort.signal.addEventListener("abort", stop, { once: true });
          let idle: ReturnType<typeof setTimeout> | undefined;
          const touch = () => {
            if (idleTimeoutMs <= 0) return;
            clearTimeout(idle);
            idle = setTimeout(stop, idleTimeoutMs);
          };
          let wasLive = false;
          try {
            touch();
            const responses = open(trackers[tracker]!, { headers: await headers(), signal: stream.signal });
            let sliceStart = performance.now();
            for await (const res of responses) {
              touch();
              for (const raw of res.events) {
                const e = liveEventOf(raw);
                if (!e) continue;
                for (const out of filter.pass(e)) {
                  if (out.kind === "snapshotEnd") {
                    stats.snapshots++;
                    wasLive = true;
                    refreshed = false;
                    trackerIndex = tracker;
                    setState("live");
                  }
                  stats.events++;
                  handOn(out);
                  yield out;
                }
                if (performance.now() - sliceStart >= SLICE_MS) {
                  await yieldToEventLoop();
                  sliceStart = performance.now();
                }
              }
            }
            throw new LiveError("unavailable", `${what}: the tracker ended the watch; reconnecting`, { retryable: true });
          } catch (err) {
            if (abort.signal.aborted) break;
            const e = stream.signal.aborted
              ? new LiveError("unavailable", `${what}: nothing came for ${idleTimeoutMs} ms; reconnecting`, { retryable: true, cause: err })
              : toLiveError(err, what, { retrying: true });
            if (!e.retryable && (refreshed || !tokenMayRefresh(e))) {
              final = e;
              break;
            }
            if (!e.retryable) refreshed = true;
            failures = wasLive ? 0 : failures + 1;
            // The next tracker, if there are several: this one may be gone.
            tracker = (tracker + 1) % trackers.length;
            setState("reconnecting", e);
          } finally {
            clearTimeout(idle);
            abort.signal.removeEventListener("abort", stop);
            stream.abort();
          }
        }
      } finally {
        abort.abort();
        setState("closed", final);
        const ended = final;
        if (ended && onError) guarded(() => onError(ended));
        resolveDone(final);
      }
    }

    const generator = run();
    let iterated = false;
    const handled = onEvent !== undefined || onState !== undefined || onConnection !== undefined || onError !== undefined;
    if (handled) {
      iterated = true;
      void (async () => {
        for await (const _ of generator);
      })();
    }
    return {
      get state() {
        return state;
      },
      stats,
      vehicles: () => filter.vehicles(),
      get tracker() {
        return tracker;
      },
      done,
      close() {
        abort.abort();
        // Never read: its loop never ran, so nothing else will say it is closed.
        if (!iterated) {
          iterated = true;
          state = "closed";
          resolveDone(undefined);
        }
      },
      [Symbol.asyncIterator]() {
        if (iterated) throw new Error(`${what}: this watch is already being read (handlers, or another loop)`);
        iterated = true;
        return generator;
      },
    };
  }

  const trackerCall = <R>(
    what: string,
    signal: AbortSignal | undefined,
    call: (c: Client<typeof TrackerService>, o: CallOptions) => Promise<R>,
  ) => unary(what, trackers, "tracker", signal, call);
  const historyCall = <R>(
    what: string,
    signal: AbortSignal | undefined,
    call: (c: Client<typeof HistoryService>, o: CallOptions) => Promise<R>,
  ) => unary(what, histories, "history", signal, call);

  return {
    watchVehicle(vehicleId, options = {}) {
      const ids = list(vehicleId as string | readonly string[]);
      return watch(`watch vehicle ${ids.join(",")}`, options, (c, o) =>
        c.watchVehicles({ vehicleIds: ids, minIntervalMs: options.minIntervalMs ?? 0 }, o),
      );
    },
    watchOrder(orderId, options = {}) {
      return watch(`watch order ${orderId}`, options, (c, o) => c.watchVehicles({ orderId, minIntervalMs: options.minIntervalMs ?? 0 }, o));
    },
    watchArea(area, options = {}) {
      const req = { area: areaMessage(area), statuses: [...(options.statuses ?? [])], minIntervalMs: options.minIntervalMs ?? 0 };
      return watch("watch area", options, (c, o) => c.watchArea(req, o));
    },
    async getVehicle(vehicleId, { signal } = {}) {
      const r = await trackerCall(`get vehicle ${vehicleId}`, signal, (c, o) => c.getVehicle({ vehicleId }, o));
      return vehicleOf(r.vehicle!);
    },
    async nearby(area, { signal, statuses = [], limit = 0 } = {}) {
      const r = await trackerCall("nearby", signal, (c, o) => c.nearby({ area: areaMessage(area), statuses: [...statuses], limit }, o));
      return r.vehicles.map((v) => ({ vehicle: vehicleOf(v.vehicle!), distanceM: v.distanceM }));
    },
    async countByStatus({ signal, fleetId = "" } = {}) {
      const r = await trackerCall("count by status", signal, (c, o) => c.countByStatus({ fleetId }, o));
      return new Map(r.counts.map((c) => [c.status, Number(c.count)]));
    },
    async setStatus(vehicleId, status, { signal, orderId = "" } = {}) {
      const r = await trackerCall(`set status of ${vehicleId}`, signal, (c, o) => c.setStatus({ vehicleId, status, orderId }, o));
      return vehicleOf(r.vehicle!);
    },
    async track(vehicleId, { signal, from, to, maxPoints = 0 }) {
      const r = await historyCall(`track of ${vehicleId}`, signal, (c, o) =>
        c.getTrack({ vehicleId, from: timestampFromMs(ms(from)), to: timestampFromMs(ms(to)), maxPoints }, o),
      );
      return { points: r.points.map(pointOf), totalPoints: Number(r.totalPoints) };
    },
    replay(target, { signal, from, to, speed = 1 }) {
      const what = "vehicleId" in target ? `replay of ${target.vehicleId}` : "replay of an area";
      const base: MessageInitShape<typeof ReplayRequestSchema> = {
        target: "vehicleId" in target ? { case: "vehicleId", value: target.vehicleId } : { case: "area", value: areaMessage(target.area) },
        to: timestampFromMs(ms(to)),
        speed,
      };
      return {
        async *[Symbol.asyncIterator]() {
          if (histories.length === 0)
            throw new LiveError("invalid-argument", `${what}: no history URL: pass historyUrl to createLiveClient`);
          // A replay that breaks (history restarting, the network) opens again on the next history
          // server from the last point handed on: history replays a range in recorded order, so
          // what came at that moment is known and skipped (vehicle and seq), nothing before it is
          // asked for again, and nothing after it is missed. Gives up after MAX_REPLAY_BREAKS breaks in a row
          // with nothing new between them.
          let fromMs = ms(from);
          /** The points handed on that were recorded at `fromMs`. */
          let atFrom = new Set<string>();
          let breaks = 0;
          let refreshed = false;
          for (;;) {
            if (signal?.aborted) throw abortedError(what);
            const index = historyIndex;
            try {
              const stream = histories[index]!.replay(
                { ...base, from: timestampFromMs(fromMs) },
                // No deadline: a replay lasts as long as its range takes at its speed.
                { headers: await headers(), signal },
              );
              for await (const r of stream) {
                const batch: TrackPoint[] = [];
                for (const p of r.positions) {
                  const point = pointOf(p);
                  const key = `${point.vehicleId}\u0000${point.seq}`;
                  if (point.recordedAtMs < fromMs || (point.recordedAtMs === fromMs && atFrom.has(key))) continue;
                  if (point.recordedAtMs > fromMs) {
                    fromMs = point.recordedAtMs;
                    atFrom = new Set();
                  }
                  atFrom.add(key);
                  batch.push(point);
                }
                if (batch.length === 0) continue;
                breaks = 0;
                refreshed = false;
                yield batch;
              }
              return;
            } catch (err) {
              if (signal?.aborted) throw abortedError(what);
              const e = toLiveError(err, what, { retrying: true });
              if (!e.retryable && (refreshed || !tokenMayRefresh(e))) throw toLiveError(err, what);
              if (!e.retryable) refreshed = true;
              else if (++breaks > MAX_REPLAY_BREAKS) throw toLiveError(err, what);
              historyIndex = (index + 1) % histories.length;
              await sleep(Math.random() * Math.min(maxMs, initialMs * 2 ** (breaks - 1)), signal ?? new AbortController().signal);
            }
          }
        },
      };
    },
  };
}
