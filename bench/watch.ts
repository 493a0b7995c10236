/**
 * `bun run bench watch`: the tracker's figures, in one run, everything co-located on this machine:
 *
 * 1. Consume: a stream pre-filled with `--vehicles` vehicles × `--rounds` points (1,000 points per
 *    JetStream message, the gateway's largest batch); a tracker process drains it into Redis.
 *    tracker_points_per_s from its own counters while it drains.
 * 2. Memory: Redis used_memory after minus before, per vehicle (redis_bytes_per_vehicle).
 * 3. Nearby: a dispatcher's query (AVAILABLE within 2 km, limit 10) at random places, over gRPC,
 *    sequentially, with those vehicles live: through connect-node's client, then through
 *    @grpc/grpc-js (nearby_p99_ms), then the Redis script alone.
 * 4. Watch: vehicles stream through the gateway at `--rate` points/s (the ingest bench's load
 *    generator); one tracker process consumes, another serves (TRACKER_CONSUME=false), as the
 *    design scales them (--one-tracker: one process for both, as `fleet up` runs it); `--watchers` watches (vehicle and area mixed) over gRPC; then, in the same run under the same load, the same fan-out the seeds' way: one Redis connection per watcher
 *    SUBSCRIBEd to one channel per vehicle, published by the tracker's script. One after the
 *    other, so that neither pays for the other's CPU. Latency is from the point's recorded_at
 *    (set when the load generator sent it) to its arrival at the watcher.
 *
 * Progress lines and a table go to stdout; the LAST line is one JSON object (see `WatchFigures`).
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import type { Subprocess } from "bun";
import Redis from "ioredis";
import { PositionBatchSchema, PositionSchema, VehicleStatus, type Position } from "../gen/fleet/v1/position_pb";
import {
  NearbyRequestSchema,
  NearbyResponseSchema,
  TrackerService,
  type NearbyRequest,
  type NearbyResponse,
} from "../gen/fleet/v1/tracker_pb";
import { mintWatchToken } from "../lib/auth";
import { loadConfig } from "../lib/config";
import { ensurePositionsStream, CONSUMERS, POSITIONS_STREAM, partitionOf, positionsSubject } from "../lib/nats";
import { startServiceProcess, startStack, type ServiceProcess } from "../dev";
import { bucketBound, fetchMetrics, histogramBetween, loopDelayLine, readHistogram } from "./prom-histogram";
import { createHistogram } from "./histogram";
import type { WorkerCommand, WorkerEvent } from "./ingest-protocol";
import { simPosition } from "./point-codec";
import { cpuMeter } from "./proc";
import { summarizeProfile } from "./profile-summary";
import type { WatchCommand, WatchEvent, WatchSpec } from "./watch-protocol";
import { createStore } from "../tracker/store";
import { positiveOption } from "./options";

/** The JSON line printed last. */
export interface WatchFigures {
  tracker_points_per_s: number;
  watch_p50_ms: number;
  watch_p99_ms: number;
  redis_pubsub_p99_ms: number;
  nearby_p99_ms: number;
  redis_bytes_per_vehicle: number;
}

const TARGETS = { pointsPerS: 100_000, watchP99Ms: 25, nearbyP99Ms: 2, bytesPerVehicle: 200 };
const root = join(import.meta.dir, "..");

export const WATCH_HELP = `bun run bench watch [options]

Measures the tracker in one run (~1-2 minutes): points/s from JetStream into Redis, Redis bytes
per vehicle, Nearby latency over the live vehicles, and watch latency at a steady load through the
gateway next to the same fan-out over Redis Pub/Sub. Prints progress, a table, and last one JSON
line with tracker_points_per_s, watch_p50_ms, watch_p99_ms, redis_pubsub_p99_ms, nearby_p99_ms,
redis_bytes_per_vehicle.

Options:
  --vehicles N         vehicles pre-filled for the consume, memory and Nearby phases (default 100000)
  --rounds N           points per pre-filled vehicle (default 5)
  --nearby N           Nearby queries measured, after 200 warm-up ones (default 3000)
  --sim-vehicles N     vehicles streaming through the gateway in the watch phase (default 5000)
  --rate N             points/s they send together (default 16700)
  --watchers N         watches held open, on the tracker and on Redis each (default 1000)
  --area-share F       share of them that are area watches (default 0.2)
  --area-radius M      radius of an area watch in metres (default 1000)
  --watch-connections N  HTTP/2 connections the gRPC watches share (default 100: a watcher is a phone
                       or a browser tab with a connection of its own; fewer share windows and sockets)
  --seconds N          length of each fan-out's measured window, after a 3 s warm-up (default 20)
  --one-tracker        one tracker process consumes and serves the watches, as \`fleet up\` runs it;
                       default: one consumes, another serves (TRACKER_CONSUME=false), which on 2 busy
                       cores gets the tracker a larger share of them
  --profile            run the watch phase's tracker under --cpu-prof and print where its time went
  --quick              a smoke run: 20,000 vehicles, 1,000 watchers, 5 s
`;

interface Options {
  vehicles: number;
  rounds: number;
  nearby: number;
  simVehicles: number;
  rate: number;
  watchers: number;
  areaShare: number;
  areaRadius: number;
  watchConnections: number;
  splitTracker: boolean;
  seconds: number;
  profile: boolean;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      vehicles: { type: "string" },
      rounds: { type: "string" },
      nearby: { type: "string" },
      "sim-vehicles": { type: "string" },
      rate: { type: "string" },
      watchers: { type: "string" },
      "area-share": { type: "string" },
      "area-radius": { type: "string" },
      "watch-connections": { type: "string" },
      "one-tracker": { type: "boolean" },
      seconds: { type: "string" },
      quick: { type: "boolean" },
      profile: { type: "boolean" },
    },
    strict: true,
  });
  const num = positiveOption;
  const quick = values.quick === true;
  return {
    vehicles: num("vehicles", values.vehicles, quick ? 20_000 : 100_000),
    rounds: num("rounds", values.rounds, quick ? 2 : 5),
    nearby: num("nearby", values.nearby, quick ? 500 : 3000),
    simVehicles: num("sim-vehicles", values["sim-vehicles"], 5000),
    rate: num("rate", values.rate, 16_700),
    watchers: num("watchers", values.watchers, 1000),
    areaShare: Math.min(1, num("area-share", values["area-share"], 0.2)),
    areaRadius: num("area-radius", values["area-radius"], 1000),
    watchConnections: num("watch-connections", values["watch-connections"], 100),
    splitTracker: values["one-tracker"] !== true,
    seconds: num("seconds", values.seconds, quick ? 5 : 20),
    profile: values.profile === true,
  };
}

const fmt = (n: number, digits = 0) =>
  Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }) : "n/a";
const say = (line: string) => process.stdout.write(`${line}\n`);

/** A child speaking JSON over IPC; `next(type)` waits for its next event of that type. */
export interface Child<C, E extends { type: string }> {
  proc: Subprocess;
  send(cmd: C): void;
  next<T extends E["type"]>(type: T, timeoutMs: number): Promise<Extract<E, { type: T }>>;
}

export function spawnChild<C, E extends { type: string }>(file: string): Child<C, E> {
  const queued: E[] = [];
  const waiting = new Map<string, (e: E) => void>();
  let failure: Error | undefined;
  const proc = Bun.spawn([process.execPath, join(import.meta.dir, file)], {
    cwd: root,
    stdio: ["ignore", "inherit", "inherit"],
    serialization: "json",
    ipc(message) {
      const e = message as E;
      if (e.type === "progress") return;
      if (e.type === "failed") failure = new Error(`${file} failed: ${(e as unknown as { message: string }).message}`);
      const w = waiting.get(e.type);
      if (w) {
        waiting.delete(e.type);
        w(e);
      } else queued.push(e);
    },
  });
  return {
    proc,
    send: (cmd) => proc.send(cmd),
    next(type, timeoutMs) {
      if (failure) return Promise.reject(failure);
      const i = queued.findIndex((e) => e.type === type);
      if (i >= 0) return Promise.resolve(queued.splice(i, 1)[0] as never);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(failure ?? new Error(`${file}: no "${type}" within ${timeoutMs} ms`)), timeoutMs);
        waiting.set(type, (e) => {
          clearTimeout(timer);
          resolve(e as never);
        });
      });
    },
  };
}

/** A deterministic spread in [0, 1) (no Math.random: runs compare). */
const spread = (i: number, salt: number) => {
  // An integer hash (murmur3's finaliser) of (i, salt): independent per salt, so that the two
  // coordinates of a point are not correlated.
  let h = Math.imul(i ^ Math.imul(salt, 0x9e3779b9), 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 4294967296;
};

function fillPoint(i: number, round: number, nowMs: number): Position {
  return create(PositionSchema, {
    vehicleId: `fill-${i}`,
    seq: round,
    recordedAt: timestampFromMs(nowMs),
    receivedAt: timestampFromMs(nowMs),
    lat: 48.8 + spread(i, 1) * 0.2 + round * 1e-5,
    lon: 2.25 + spread(i, 2) * 0.2,
    speed: 8,
    heading: 90,
    accuracy: 5,
    fleetId: `fleet-${i % 20}`,
    // A quarter available, as a dispatcher's query would look for.
    status: i % 4 === 0 ? VehicleStatus.AVAILABLE : VehicleStatus.ACTIVE,
  });
}

/** Upper bounds of quantiles of a Prometheus histogram from its cumulative buckets (the bucket the quantile falls in). */
function bucketQuantiles(text: string, name: string, qs: number[]): number[] {
  const h = readHistogram(text, name);
  return qs.map((q) => bucketBound(h, q));
}

/** Runs the whole bench; returns the figures it printed last. */
export async function runWatchBench(argv: string[]): Promise<WatchFigures> {
  const o = parseOptions(argv);
  const started = performance.now();
  const elapsed = () => `${((performance.now() - started) / 1000).toFixed(0)}s`;
  const cleanups: (() => Promise<unknown>)[] = [];
  const f: WatchFigures = {
    tracker_points_per_s: NaN,
    watch_p50_ms: NaN,
    watch_p99_ms: NaN,
    redis_pubsub_p99_ms: NaN,
    nearby_p99_ms: NaN,
    redis_bytes_per_vehicle: NaN,
  };
  const extra: Record<string, number> = {};
  const notes: string[] = [];
  const cpu: Record<string, Record<string, number>> = {};
  /** Per phase, the share of it each process's busiest thread waited for a core. */
  const waited: Record<string, Record<string, number>> = {};
  const onSignal = () => {
    say("interrupted: stopping what the bench started");
    void Promise.allSettled(cleanups.reverse().map((c) => c())).then(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  try {
    say(
      `bench watch: ${fmt(o.vehicles)} vehicles pre-filled; ${fmt(o.simVehicles)} streaming ${fmt(o.rate)} points/s; ${fmt(o.watchers)} watchers; 2 cores shared by everything`,
    );
    say(`[${elapsed()}] starting nats-server and redis-server (stack helper)`);
    const stack = await startStack({ services: ["nats", "redis"] });
    cleanups.push(() => stack.stop());
    const secret = randomBytes(24).toString("base64url");
    const keys = { secret, issuer: "fleet", audience: "fleet" };
    const config = loadConfig({ ...stack.env(), FLEET_JWT_SECRET: secret });
    // Every watcher holds the one bench token: the per-token bound of a public tracker must let them all in.
    const env = { ...stack.env(), FLEET_JWT_SECRET: secret, LOG_LEVEL: "info", TRACKER_WATCHES_PER_TOKEN: String(o.watchers + 10) };
    mkdirSync(join(root, ".fleet", "logs"), { recursive: true });
    const redis = new Redis(stack.redisUrl);
    cleanups.push(async () => redis.disconnect());
    const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await redis.info("memory"))![1]);

    // ---- 1. consume ----
    say(`[${elapsed()}] filling the stream: ${fmt(o.vehicles)} vehicles × ${o.rounds} points in messages of 1,000 points`);
    const nc = await connect({ servers: stack.natsUrl });
    cleanups.push(() => nc.close());
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    await ensurePositionsStream(jsm, {
      duplicateWindow: config.duplicateWindow,
      streamMaxAge: config.streamMaxAge,
      streamMaxBytes: config.streamMaxBytes,
    });
    const now = Date.now();
    let messages = 0;
    for (let round = 1; round <= o.rounds; round++) {
      const parts: Position[][] = Array.from({ length: config.partitions }, () => []);
      const pending: Promise<unknown>[] = [];
      const flush = (p: number) => {
        pending.push(js.publish(positionsSubject(p), toBinary(PositionBatchSchema, create(PositionBatchSchema, { positions: parts[p]! }))));
        parts[p] = [];
        messages++;
      };
      for (let i = 0; i < o.vehicles; i++) {
        const p = partitionOf(`fill-${i}`, config.partitions);
        parts[p]!.push(fillPoint(i, round, now));
        if (parts[p]!.length === 1000) flush(p);
        if (pending.length >= 64) await Promise.all(pending.splice(0));
      }
      for (let p = 0; p < parts.length; p++) if (parts[p]!.length > 0) flush(p);
      await Promise.all(pending);
    }
    const total = o.vehicles * o.rounds;
    say(`  ${fmt(total)} points in ${fmt(messages)} messages`);
    const memBefore = await usedMemory();

    const trackerLog = join(root, ".fleet", "logs", "bench-tracker.log");
    say(`[${elapsed()}] starting the tracker (log: ${trackerLog}); it drains the stream`);
    let tracker: ServiceProcess = await startServiceProcess({
      service: "tracker",
      env: { ...env, TRACKER_PORT: "0" },
      logFile: trackerLog,
    });
    cleanups.push(() => tracker.stop("SIGTERM", 5000));
    const meter = cpuMeter({ tracker: tracker.pid, redis: stack.pid("redis"), nats: stack.pid("nats") }, { rest: true });
    const samples: { t: number; points: number }[] = [];
    const pointsDone = async () => {
      const text = await fetchMetrics(tracker.adminUrl);
      return text
        .split("\n")
        .filter((l) => l.startsWith("tracker_points_total"))
        .reduce((s, l) => s + Number(l.split(" ").pop()), 0);
    };
    for (;;) {
      const points = await pointsDone();
      samples.push({ t: performance.now(), points });
      if (points >= total) break;
      const info = await jsm.consumers.info(POSITIONS_STREAM, CONSUMERS.tracker);
      if (samples.length % 4 === 0) say(`  ${fmt(points)} of ${fmt(total)} points taken, ${fmt(info.num_pending)} messages pending`);
      if (performance.now() - started > 600_000) throw new Error("the tracker did not drain the stream within 10 minutes");
      await Bun.sleep(250);
    }
    cpu.consume = meter.stop();
    // From the first sample with points to the last: the tracker's start-up is not counted.
    const first = samples.find((s) => s.points > 0)!;
    const last = samples.at(-1)!;
    const firstIndex = samples.indexOf(first);
    const before = firstIndex > 0 ? samples[firstIndex - 1]! : first;
    f.tracker_points_per_s = (last.points - before.points) / ((last.t - before.t) / 1000);
    say(`  => ${fmt(f.tracker_points_per_s)} points/s from JetStream into Redis`);

    // ---- 2. memory ----
    const memAfter = await usedMemory();
    f.redis_bytes_per_vehicle = (memAfter - memBefore) / o.vehicles;
    const geoBytes = Number(await redis.call("MEMORY", "USAGE", `${config.redisPrefix}geo`, "SAMPLES", "0"));
    let stateBytes = 0;
    for (let b = 0; b < 4096; b += 256) {
      const pipe = redis.pipeline();
      for (let k = b; k < b + 256; k++) pipe.call("MEMORY", "USAGE", `${config.redisPrefix}st:${k}`, "SAMPLES", "0");
      for (const [, v] of (await pipe.exec()) ?? []) stateBytes += Number(v ?? 0);
    }
    extra.geoBytes = geoBytes / o.vehicles;
    extra.stateBytes = stateBytes / o.vehicles;
    say(
      `  => ${fmt(f.redis_bytes_per_vehicle, 1)} bytes per vehicle in Redis (GEO set ${fmt(extra.geoBytes, 1)}, state buckets ${fmt(extra.stateBytes, 1)}, MEMORY USAGE)`,
    );

    // ---- 3. nearby ----
    const adminToken = await mintWatchToken(keys, { all: true, dispatch: true });
    const headers = { authorization: `Bearer ${adminToken}` };
    const client = createClient(TrackerService, createGrpcTransport({ baseUrl: tracker.url }));
    say(
      `[${elapsed()}] Nearby: AVAILABLE within 2 km, limit 10, at random places; 200 warm-up then ${fmt(o.nearby)} measured, one at a time`,
    );
    const nearbyHist = createHistogram();
    let hits = 0;
    for (let q = 0; q < 200 + o.nearby; q++) {
      const lat = 48.82 + spread(q, 7) * 0.16;
      const lon = 2.27 + spread(q, 8) * 0.16;
      const t0 = performance.now();
      const res = await client.nearby(
        { area: { shape: { case: "circle", value: { lat, lon, radiusM: 2000 } } }, statuses: [VehicleStatus.AVAILABLE], limit: 10 },
        { headers },
      );
      if (q >= 200) {
        nearbyHist.record(performance.now() - t0);
        hits += res.vehicles.length;
      }
    }
    extra.nearbyConnectP99 = nearbyHist.quantile(0.99);
    extra.nearbyConnectP50 = nearbyHist.quantile(0.5);
    extra.nearbyHits = hits / o.nearby;
    say(
      `  => connect-node's gRPC client: p50 ${fmt(extra.nearbyConnectP50, 2)} ms, p99 ${fmt(extra.nearbyConnectP99, 2)} ms (${fmt(extra.nearbyHits, 1)} vehicles per answer)`,
    );
    // The same queries through @grpc/grpc-js, the Node.js gRPC client most services would use.
    const grpcJs = new grpc.Client(new URL(tracker.url).host, grpc.credentials.createInsecure());
    const metadata = new grpc.Metadata();
    metadata.set("authorization", headers.authorization);
    const nearbyGrpcJs = (lat: number, lon: number) =>
      new Promise<NearbyResponse>((resolve, reject) =>
        grpcJs.makeUnaryRequest(
          "/fleet.v1.TrackerService/Nearby",
          (m: NearbyRequest) => Buffer.from(toBinary(NearbyRequestSchema, m)),
          (b: Buffer) => fromBinary(NearbyResponseSchema, b),
          create(NearbyRequestSchema, {
            area: { shape: { case: "circle", value: { lat, lon, radiusM: 2000 } } },
            statuses: [VehicleStatus.AVAILABLE],
            limit: 10,
          }),
          metadata,
          (err, res) => (err ? reject(err) : resolve(res!)),
        ),
      );
    const grpcJsHist = createHistogram();
    const trackerBefore = await fetchMetrics(tracker.adminUrl);
    for (let q = 0; q < 200 + o.nearby; q++) {
      const t0 = performance.now();
      await nearbyGrpcJs(48.82 + spread(q, 7) * 0.16, 2.27 + spread(q, 8) * 0.16);
      if (q >= 200) grpcJsHist.record(performance.now() - t0);
    }
    grpcJs.close();
    f.nearby_p99_ms = grpcJsHist.quantile(0.99);
    extra.nearbyP50 = grpcJsHist.quantile(0.5);
    say(`  => @grpc/grpc-js: p50 ${fmt(extra.nearbyP50, 2)} ms, p99 ${fmt(f.nearby_p99_ms, 2)} ms`);
    // The tracker's own time per call (its rpc_duration_seconds, both clients' calls): the tail of
    // the handler and the store, without the client and the network.
    const trackerAfter = await fetchMetrics(tracker.adminUrl);
    say(`  => the tracker during the grpc-js queries: ${loopDelayLine(trackerBefore, trackerAfter)}`);
    const handler = bucketQuantiles(
      trackerAfter
        .split("\n")
        .filter((l) => !l.startsWith("rpc_duration_seconds_bucket") || l.includes('procedure="Nearby"'))
        .join("\n"),
      "rpc_duration_seconds",
      [0.5, 0.99],
    );
    say(
      `  => in the tracker (its rpc_duration_seconds, bucket bounds): p50 ≤ ${fmt(handler[0]! * 1000, 2)} ms, p99 ≤ ${fmt(handler[1]! * 1000, 2)} ms`,
    );
    // The same queries straight to Redis (the tracker's one script call), to tell the store from the RPC.
    const store = createStore({ redis, prefix: config.redisPrefix });
    const scriptHist = createHistogram();
    for (let q = 0; q < 200 + o.nearby; q++) {
      const t0 = performance.now();
      await store.nearby(
        48.82 + spread(q, 7) * 0.16,
        2.27 + spread(q, 8) * 0.16,
        2001,
        10,
        1 << VehicleStatus.AVAILABLE,
        undefined,
        config.scanMax,
      );
      if (q >= 200) scriptHist.record(performance.now() - t0);
    }
    extra.nearbyScriptP50 = scriptHist.quantile(0.5);
    extra.nearbyScriptP99 = scriptHist.quantile(0.99);
    say(`  => the Redis script alone: p50 ${fmt(extra.nearbyScriptP50, 2)} ms, p99 ${fmt(extra.nearbyScriptP99, 2)} ms`);

    // ---- 4. watch ----
    say(
      o.splitTracker
        ? `[${elapsed()}] restarting the tracker as two processes sharing the work, as they would scale out: one consumes the stream, ` +
            `one serves the watches (TRACKER_CONSUME=false; --one-tracker: one process for both)`
        : `[${elapsed()}] restarting the tracker: one process consumes the stream and serves the watches, as \`fleet up\` runs it`,
    );
    await tracker.stop("SIGTERM", 5000);
    const profileDir = join(root, ".fleet", "profiles", `bench-watch-${Date.now().toString(36)}`);
    const profileEnv: Record<string, string> = {};
    if (o.profile) {
      mkdirSync(profileDir, { recursive: true });
      profileEnv.BUN_OPTIONS = `--cpu-prof --cpu-prof-dir=${profileDir}`;
      notes.push(`the watch-serving tracker ran under --cpu-prof (slower than without): profile in ${profileDir}`);
    }
    const startConsumer = (pubsub: boolean, extraEnv: Record<string, string> = {}) =>
      startServiceProcess({
        service: "tracker",
        env: { ...env, TRACKER_PORT: "0", TRACKER_REDIS_PUBSUB: String(pubsub), ...extraEnv },
        logFile: trackerLog,
      });
    tracker = await startConsumer(false, o.splitTracker ? {} : profileEnv);
    const server = o.splitTracker
      ? await startServiceProcess({
          service: "tracker",
          env: { ...env, TRACKER_PORT: "0", TRACKER_CONSUME: "false", ...profileEnv },
          logFile: join(root, ".fleet", "logs", "bench-tracker-watches.log"),
        })
      : tracker;
    if (o.splitTracker) cleanups.push(() => server.stop("SIGTERM", 5000));
    const gatewayLog = join(root, ".fleet", "logs", "bench-gateway.log");
    say(`[${elapsed()}] starting the gateway (log: ${gatewayLog})`);
    const gateway = await startServiceProcess({ service: "gateway", env: { ...env, GATEWAY_PORT: "0" }, logFile: gatewayLog });
    cleanups.push(() => gateway.stop("SIGTERM", 5000));

    const load = spawnChild<WorkerCommand, WorkerEvent>("ingest-worker.ts");
    cleanups.push(async () => load.proc.kill());
    await load.next("hello", 10_000);
    const simPrefix = "sim";
    load.send({
      type: "init",
      url: gateway.url,
      keys,
      connections: Math.max(2, Math.ceil(o.simVehicles / 1000)),
      prefix: simPrefix,
      first: 0,
      count: o.simVehicles,
    });
    await load.next("ready", 60_000);
    load.send({ type: "open", batch: 500, timeoutMs: 120_000 });
    const opened = await load.next("opened", 130_000);
    say(`  ${fmt(opened.open)} vehicle streams open (${opened.failed} failed)`);

    // The watchers: vehicle watches of one streaming vehicle each, area watches of a circle.
    const areaCount = Math.round(o.watchers * o.areaShare);
    const specs: WatchSpec[] = [];
    for (let w = 0; w < o.watchers - areaCount; w++)
      specs.push({ kind: "vehicles", ids: [`${simPrefix}-${Math.floor(spread(w, 3) * o.simVehicles)}`] });
    const simAt = Array.from({ length: o.simVehicles }, (_, i) => simPosition(i));
    const metresPerDegLat = 111_195;
    for (let w = 0; w < areaCount; w++) {
      const lat = 48.81 + spread(w, 4) * 0.18;
      const lon = 2.26 + spread(w, 5) * 0.18;
      const cos = Math.cos((lat * Math.PI) / 180);
      const ids = simAt
        .map(([la, lo], i) => [Math.hypot((la - lat) * metresPerDegLat, (lo - lon) * metresPerDegLat * cos), i] as const)
        .filter(([d]) => d < o.areaRadius - 5)
        .map(([, i]) => `${simPrefix}-${i}`);
      specs.push({ kind: "area", lat, lon, radiusM: o.areaRadius, ids });
    }
    extra.areaVehicles = specs.filter((s) => s.kind === "area").reduce((n, s) => n + s.ids.length, 0) / Math.max(1, areaCount);
    const watchToken = await mintWatchToken(keys, { all: true });

    /**
     * One fan-out under the steady load: its watchers open, a warm-up, the measured window, then
     * they close. The two ways run one after the other on the same load, so that neither pays for
     * the other's CPU on this 2-core machine.
     */
    const measureFanout = async (mode: "grpc" | "redis") => {
      const watchers = spawnChild<WatchCommand, WatchEvent>("watch-worker.ts");
      cleanups.push(async () => watchers.proc.kill());
      await watchers.next("hello", 10_000);
      if (mode === "grpc") {
        say(
          `[${elapsed()}] gRPC watches: ${fmt(o.watchers)} on the watch-serving tracker (${fmt(areaCount)} areas of ${fmt(o.areaRadius)} m, ~${fmt(extra.areaVehicles ?? NaN, 0)} streaming vehicles each) over ${fmt(o.watchConnections)} HTTP/2 connections`,
        );
        watchers.send({
          type: "init",
          mode,
          url: server.url,
          token: watchToken,
          channelPrefix: "",
          connections: o.watchConnections,
          watches: specs,
        });
      } else {
        say(
          `[${elapsed()}] the seeds' way: ${fmt(o.watchers)} Redis subscribers (a connection each, a channel per vehicle), fed by the consuming tracker's script (TRACKER_REDIS_PUBSUB=true)`,
        );
        watchers.send({
          type: "init",
          mode,
          url: stack.redisUrl,
          token: "",
          channelPrefix: `${config.redisPrefix}pos:`,
          connections: 0,
          watches: specs,
        });
      }
      const ready = await watchers.next("ready", 120_000);
      say(`  open ${ready.open} (failed ${ready.failed}${ready.lastError ? `: ${ready.lastError}` : ""})`);
      say(`  steady ${fmt(o.rate)} points/s through the gateway: 3 s warm-up, then ${o.seconds} s measured`);
      const trackers: Record<string, number | undefined> =
        o.splitTracker && mode === "grpc"
          ? { "tracker (consumer)": tracker.pid, "tracker (watches)": server.pid }
          : { tracker: tracker.pid };
      const pids = {
        ...trackers,
        gateway: gateway.pid,
        nats: stack.pid("nats"),
        redis: stack.pid("redis"),
        load: load.proc.pid,
        watchers: watchers.proc.pid,
      };
      load.send({ type: "steady", rate: o.rate, warmupMs: 3000, durationMs: o.seconds * 1000 });
      await Bun.sleep(3000);
      // The trackers' delay histograms are read before and after, so that they cover the measured window only.
      const consumerBefore = await fetchMetrics(tracker.adminUrl);
      const serverBefore = mode === "grpc" ? await fetchMetrics(server.adminUrl) : "";
      const gatewayBefore = await fetchMetrics(gateway.adminUrl);
      watchers.send({ type: "record" });
      const meter = cpuMeter(pids, { rest: true });
      // One line a second: how far the tracker's consumer is behind the stream.
      let lastPoints = await pointsDone();
      const ticker = setInterval(async () => {
        try {
          const info = await jsm.consumers.info(POSITIONS_STREAM, CONSUMERS.tracker);
          const points = await pointsDone();
          say(
            `  consumer: ${fmt(info.num_pending)} messages pending, ${fmt(info.num_ack_pending)} unacked; tracker took ${fmt(points - lastPoints)} points in the last second`,
          );
          lastPoints = points;
        } catch {
          // a tick lost is fine
        }
      }, 1000);
      const steadied = await load.next("steadied", o.seconds * 1000 + 60_000).finally(() => clearInterval(ticker));
      cpu[`watch, ${mode}`] = meter.stop();
      waited[`watch, ${mode}`] = meter.waited;
      watchers.send({ type: "report" });
      const report = await watchers.next("report", 30_000);
      // The serving tracker's counters while its watches are still open.
      const serverText = mode === "grpc" ? await fetchMetrics(server.adminUrl) : "";
      const consumerText = await fetchMetrics(tracker.adminUrl);
      const gatewayText = await fetchMetrics(gateway.adminUrl);
      say(`  gateway: ${loopDelayLine(gatewayBefore, gatewayText)}`);
      say(`  consuming tracker: ${loopDelayLine(consumerBefore, consumerText)}`);
      if (mode === "grpc" && server !== tracker) say(`  watch-serving tracker: ${loopDelayLine(serverBefore, serverText)}`);
      const applyDelay = histogramBetween(consumerBefore, consumerText, "tracker_apply_delay_seconds");
      say(
        `  the consuming tracker had each point in Redis (gateway receive → script answered, first point of each call, its tracker_apply_delay_seconds): p50 ≤ ${fmt(bucketBound(applyDelay, 0.5) * 1000, 1)} ms, p99 ≤ ${fmt(bucketBound(applyDelay, 0.99) * 1000, 1)} ms`,
      );
      if (mode === "grpc") {
        const liveDelay = histogramBetween(serverBefore, serverText, "tracker_live_delay_seconds");
        say(
          `  live events reached the watch server (gateway receive → NATS delivery, its tracker_live_delay_seconds): p50 ≤ ${fmt(bucketBound(liveDelay, 0.5) * 1000, 1)} ms, p99 ≤ ${fmt(bucketBound(liveDelay, 0.99) * 1000, 1)} ms`,
        );
      }
      watchers.send({ type: "close" });
      await watchers.next("closed", 10_000).catch(() => undefined);
      watchers.proc.kill();
      const h = createHistogram();
      h.merge(report.histogram);
      const ack = createHistogram();
      ack.merge(steadied.histogram);
      if (report.errors > 0) notes.push(`${report.errors} ${mode} watchers ended with an error (last: ${report.lastError})`);
      if (mode === "grpc" && report.messages > 0)
        say(
          `  the watchers read ${fmt(report.messages / o.seconds)} gRPC messages/s, ${fmt(h.count / report.messages, 2)} updates in each`,
        );
      return { h, eventsPerS: h.count / o.seconds, offered: steadied.sent / steadied.seconds, ackP99: ack.quantile(0.99), serverText };
    };

    const g = await measureFanout("grpc");
    f.watch_p50_ms = g.h.quantile(0.5);
    f.watch_p99_ms = g.h.quantile(0.99);
    extra.offered = g.offered;
    extra.grpcEventsPerS = g.eventsPerS;
    extra.ackP99 = g.ackP99;
    const serverText = g.serverText;
    const serverMetrics = serverText
      .split("\n")
      .filter((l) => /^(tracker_watch|tracker_live_subscriptions|rpc_calls_total.*Watch)/.test(l));
    say(`  watch-serving tracker: ${serverMetrics.map((l) => l.replace(/,?service="tracker"/, "")).join("; ")}`);
    say(
      `  => offered ${fmt(g.offered)} points/s; ${fmt(g.eventsPerS)} updates/s delivered, p50 ${fmt(f.watch_p50_ms, 2)} ms, p99 ${fmt(f.watch_p99_ms, 2)} ms (p99.9 ${fmt(g.h.quantile(0.999), 2)}); gateway ack p99 ${fmt(g.ackP99, 2)} ms`,
    );

    say(`[${elapsed()}] restarting the consuming tracker with TRACKER_REDIS_PUBSUB=true (its script also PUBLISHes each update)`);
    if (o.splitTracker) await server.stop("SIGTERM", 15_000);
    await tracker.stop("SIGTERM", 15_000);
    tracker = await startConsumer(true);
    const r = await measureFanout("redis");
    f.redis_pubsub_p99_ms = r.h.quantile(0.99);
    extra.redisP50 = r.h.quantile(0.5);
    extra.redisEventsPerS = r.eventsPerS;
    extra.redisOffered = r.offered;
    say(
      `  => offered ${fmt(r.offered)} points/s; ${fmt(r.eventsPerS)} updates/s delivered, p50 ${fmt(extra.redisP50, 2)} ms, p99 ${fmt(f.redis_pubsub_p99_ms, 2)} ms; gateway ack p99 ${fmt(r.ackP99, 2)} ms`,
    );
    load.send({ type: "close", timeoutMs: 5000 });
    await load.next("closed", 10_000).catch(() => undefined);
    if (o.profile) {
      const file = readdirSync(profileDir).find((n) => n.endsWith(".cpuprofile"));
      if (!file) say("  no profile written (the tracker did not exit cleanly?)");
      else {
        const { functions, files } = summarizeProfile(join(profileDir, file), 20);
        say(`  watch-serving tracker profile ${join(profileDir, file)} (whole watch phase), self time by file:`);
        for (const l of files) say(`    ${(l.share * 100).toFixed(1).padStart(5)}%  ${l.name}`);
        say("  by function:");
        for (const l of functions) say(`    ${(l.share * 100).toFixed(1).padStart(5)}%  ${l.name}`);
      }
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    for (const c of cleanups.reverse()) await c().catch((err) => say(`cleanup: ${err instanceof Error ? err.message : String(err)}`));
  }

  const mark = (ok: boolean) => (ok ? "✔" : "✘");
  say("");
  say("| figure | measured | target |");
  say("|---|---|---|");
  say(
    `| tracker_points_per_s (JetStream → Redis, 1,000-point messages) | ${fmt(f.tracker_points_per_s)} | ≥ ${fmt(TARGETS.pointsPerS)} ${mark(f.tracker_points_per_s >= TARGETS.pointsPerS)} |`,
  );
  say(`| watch_p50_ms (vehicle → gateway → JetStream → tracker → NATS → gRPC watcher) | ${fmt(f.watch_p50_ms, 2)} | |`);
  say(
    `| watch_p99_ms at ${fmt(extra.offered ?? NaN)} points/s, ${fmt(o.watchers)} watchers | ${fmt(f.watch_p99_ms, 2)} | ≤ ${TARGETS.watchP99Ms} ${mark(f.watch_p99_ms <= TARGETS.watchP99Ms)} and ≤ Redis ${mark(f.watch_p99_ms <= f.redis_pubsub_p99_ms)} |`,
  );
  say(
    `| redis_pubsub_p99_ms (same load, one channel per vehicle; p50 ${fmt(extra.redisP50 ?? NaN, 2)}) | ${fmt(f.redis_pubsub_p99_ms, 2)} | reference |`,
  );
  say(
    `| nearby_p99_ms through @grpc/grpc-js (AVAILABLE within 2 km, limit 10, ${fmt(o.vehicles)} live; p50 ${fmt(extra.nearbyP50 ?? NaN, 2)}) | ${fmt(f.nearby_p99_ms, 2)} | ≤ ${TARGETS.nearbyP99Ms} ${mark(f.nearby_p99_ms <= TARGETS.nearbyP99Ms)} |`,
  );
  say(
    `| Nearby through connect-node's gRPC client, p99 (p50 ${fmt(extra.nearbyConnectP50 ?? NaN, 2)}) | ${fmt(extra.nearbyConnectP99 ?? NaN, 2)} | reference |`,
  );
  say(
    `| Nearby's Redis script alone, p99 (p50 ${fmt(extra.nearbyScriptP50 ?? NaN, 2)}) | ${fmt(extra.nearbyScriptP99 ?? NaN, 2)} | reference |`,
  );
  say(
    `| redis_bytes_per_vehicle (GEO ${fmt(extra.geoBytes ?? NaN, 1)} + state ${fmt(extra.stateBytes ?? NaN, 1)} + rest) | ${fmt(f.redis_bytes_per_vehicle, 1)} | ≤ ${TARGETS.bytesPerVehicle} ${mark(f.redis_bytes_per_vehicle <= TARGETS.bytesPerVehicle)} |`,
  );
  say("");
  say(
    `updates delivered per second in the measured window: tracker watches ${fmt(extra.grpcEventsPerS ?? NaN)}, Redis subscribers ${fmt(extra.redisEventsPerS ?? NaN)}; gateway ack p99 ${fmt(extra.ackP99 ?? NaN, 2)} ms`,
  );
  say("CPU (1.0 = one core) per phase:");
  for (const [phase, use] of Object.entries(cpu))
    say(
      `  ${phase}: ${Object.entries(use)
        .map(([k, v]) => `${k} ${fmt(v, 2)}`)
        .join(", ")}`,
    );
  say("Waiting for a core (busiest thread of each process, share of the phase):");
  for (const [phase, use] of Object.entries(waited))
    say(
      `  ${phase}: ${Object.entries(use)
        .map(([k, v]) => `${k} ${fmt(v, 3)}`)
        .join(", ")}`,
    );
  for (const n of notes) say(`note: ${n}`);
  const rounded: WatchFigures = {
    tracker_points_per_s: Math.round(f.tracker_points_per_s),
    watch_p50_ms: Number(f.watch_p50_ms.toFixed(2)),
    watch_p99_ms: Number(f.watch_p99_ms.toFixed(2)),
    redis_pubsub_p99_ms: Number(f.redis_pubsub_p99_ms.toFixed(2)),
    nearby_p99_ms: Number(f.nearby_p99_ms.toFixed(2)),
    redis_bytes_per_vehicle: Number(f.redis_bytes_per_vehicle.toFixed(1)),
  };
  say(JSON.stringify(rounded, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? null : v)));
  return rounded;
}
