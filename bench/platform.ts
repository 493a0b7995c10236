/**
 * `bun run bench platform`: the whole platform on this machine under the seeds' load, in one run
 * (issue 18): gateways (several processes on one port, SO_REUSEPORT), NATS JetStream, the tracker,
 * history, the archiver, Redis, PostgreSQL and S3 (s3rver), with
 *
 * - vehicles (100,000 by default) EACH ON ITS OWN TCP CONNECTION with its own token, from several
 *   load-generator processes (bench/platform-vehicles.ts: hand-made HTTP/2, one timer per process),
 *   each process on its own loopback source address so that ephemeral ports do not run out;
 * - 1,000 watchers: vehicle and area watches over gRPC (bench/watch-worker.ts), vehicle, order and
 *   area watches over Connect-Web's transport (bench/platform-watchers.ts);
 * - a dispatcher's Nearby and GetTrack at a steady rate, and PostgreSQL polled for sampled vehicles
 *   (how long a point takes to be visible in history).
 *
 * Then, in the same run: the capacity curve (the offered load in steps), the live fan-out's peers
 * (the same vehicle watches as raw Redis subscribers fed by the tracker's script), the zero-loss
 * check (every acked point in PostgreSQL once, the tracker at each vehicle's newest point), and the
 * ingest peers: JetStream's own PubAck latency at the same rate, and Mosquitto (MQTT QoS 1) with the
 * same number of connections. Progress lines and a table go to stdout; the LAST line is one JSON
 * object (see `PlatformFigures`).
 */
import { randomBytes } from "node:crypto";
import { readdirSync } from "node:fs";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { jetstream, jetstreamManager, StorageType, type JetStreamManager } from "@nats-io/jetstream";
import { connect as natsConnect } from "@nats-io/transport-node";
import Redis from "ioredis";
import postgres from "postgres";
import { freePort, startServiceProcess, startStack, type ServiceProcess, type Stack } from "../dev";
import { HistoryService } from "../gen/fleet/v1/history_pb";
import { VehicleStatus } from "../gen/fleet/v1/position_pb";
import { TrackerService } from "../gen/fleet/v1/tracker_pb";
import { mintWatchToken } from "../lib/auth";
import { loadConfig } from "../lib/config";
import { CONSUMERS, partitionOf, POSITIONS_STREAM } from "../lib/nats";
import { BUCKETS } from "../tracker/bucket";
import { createHistogram, type Histogram } from "./histogram";
import { startMosquitto, type Mosquitto } from "./mosquitto";
import { encodePosition, vehicleTemplate } from "./point-codec";
import { childPids, cpuSeconds, machineBusySeconds, rssBytes } from "./proc";
import { addHistograms, bucketBound, fetchMetrics, histogramBetween } from "./prom-histogram";
import { summarizeProfile } from "./profile-summary";
import { CITIES, cityCenter, fleetOf, type VehicleCommand, type VehicleEvent, type VehicleTally } from "./platform-vehicles";
import { type Child, spawnChild } from "./watch";
import type { WatchCommand, WatchEvent, WatchSpec } from "./watch-protocol";
import { positiveOption } from "./options";

/** The JSON line printed last (issue 18, item 7). */
export interface PlatformFigures {
  vehicles: number;
  connections: number;
  offered_points_per_s: number;
  minutes: number;
  acked: number;
  lost: number;
  duplicated: number;
  ack_p50_ms: number;
  ack_p99_ms: number;
  watch_p50_ms: number;
  watch_p99_ms: number;
  history_visible_p99_ms: number;
  nearby_p99_ms: number;
  gettrack_p99_ms: number;
  gateway_bytes_per_vehicle: number;
  loadgen_cpu_share: number;
  jetstream_puback_p99_ms: number;
  mosquitto_puback_p99_ms: number;
  mosquitto_bytes_per_connection: number;
  socketio_watch_p99_ms: number;
  redis_floor_watch_p99_ms: number;
  max_points_per_s_within_promises: number;
  tracker_behind: number;
  consumer_lag_max: number;
  services: Record<string, { cpu_us_per_point: number; rss_mb: number; rss_mb_per_hour: number; fds: number }>;
}

/** The seeds' promises the capacity curve is judged by. */
const PROMISES = { ackP99Ms: 10, watchP99Ms: 50 };
const root = join(import.meta.dir, "..");
/** Vehicles one load-generator process holds (each a socket: well under the 20,000 descriptors of a process). */
const VEHICLES_PER_WORKER = 10_000;
/** Connections one gateway process is meant to hold (FLEET_MAX_CONNECTIONS is set above it, under 20,000). */
const VEHICLES_PER_GATEWAY = 15_000;

export const PLATFORM_HELP = `bun run bench platform [options]

The whole platform on this machine under the seeds' load, in one run: gateways (several processes
on one port), NATS JetStream, tracker, history, archiver, Redis, PostgreSQL, S3; vehicles each on
their own TCP connection with their own token, sending every 6 s by default (the simulator's
routes, a share of bad fixes and reconnects); 1,000 watchers (vehicles, orders, areas; gRPC and
Connect-Web's transport); dispatcher Nearby and GetTrack at a steady rate. Then the capacity curve,
the Redis Pub/Sub floor of the same watches, the zero-loss check, and the ingest peers (JetStream's
own PubAck and Mosquitto QoS 1 on the same number of connections). Prints progress, a table, and
last one JSON line. Run it alone: flock /tmp/fleet-bench.lock bun run bench platform

Options:
  --vehicles N        vehicles, each on its own connection (default 100000)
  --rate N            points/s offered in all (default vehicles / 6: each vehicle every 6 s)
  --minutes N         length of the measured main phase (default 10)
  --soak              a 60-minute main phase (--minutes 60): memory, descriptors and lag must stay flat
  --steps LIST        capacity curve, points/s (default 5000,10000,16700,25000,35000,50000; "" for none)
  --step-seconds N    measured length of each step after a 5 s warm-up (default 60)
  --watchers N        watchers in all (default 1000)
  --gateways N        gateway processes on the one port (default vehicles / ${VEHICLES_PER_GATEWAY}, at least 1)
  --peer-seconds N    length of each peer measurement (default 30)
  --skip-peers        no Redis floor, JetStream PubAck or Mosquitto phases
  --vehicle-listener L  where the vehicles connect: "lite" (default), the gateways' vehicle port
                      (GATEWAY_VEHICLE_PORT, lib/h2), or "main", GATEWAY_PORT (node:http2)
  --profile           run the first gateway and the tracker under \`bun --cpu-prof\` and print where
                      their time went (slower: figures of such a run are not comparable)
  --quick             smoke run: 5,000 vehicles, 30 s, short steps (figures not comparable)
`;

interface Options {
  vehicles: number;
  rate: number;
  minutes: number;
  steps: number[];
  stepSeconds: number;
  watchers: number;
  gateways: number;
  peerSeconds: number;
  warmupSeconds: number;
  skipPeers: boolean;
  profile: boolean;
  vehicleListener: "lite" | "main";
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      vehicles: { type: "string" },
      rate: { type: "string" },
      minutes: { type: "string" },
      soak: { type: "boolean" },
      steps: { type: "string" },
      "step-seconds": { type: "string" },
      watchers: { type: "string" },
      gateways: { type: "string" },
      "peer-seconds": { type: "string" },
      "skip-peers": { type: "boolean" },
      "vehicle-listener": { type: "string" },
      profile: { type: "boolean" },
      quick: { type: "boolean" },
    },
    strict: true,
  });
  const quick = values.quick === true;
  const num = positiveOption;
  const listener = values["vehicle-listener"] ?? "lite";
  if (listener !== "lite" && listener !== "main") throw new Error(`--vehicle-listener: "lite" or "main", not "${listener}"`);
  const vehicles = Math.round(num("vehicles", values.vehicles, quick ? 5000 : 100_000));
  const steps =
    values.steps === undefined
      ? quick
        ? [2000, 5000]
        : [5000, 10_000, 16_700, 25_000, 35_000, 50_000]
      : values.steps
          .split(",")
          .filter((s) => s.trim() !== "")
          .map((s) => num("steps", s, 1));
  return {
    vehicles,
    rate: num("rate", values.rate, Math.round(vehicles / 6)),
    minutes: values.soak ? 60 : num("minutes", values.minutes, quick ? 0.5 : 10),
    steps,
    stepSeconds: num("step-seconds", values["step-seconds"], quick ? 10 : 60),
    watchers: Math.round(num("watchers", values.watchers, quick ? 200 : 1000)),
    gateways: Math.round(num("gateways", values.gateways, Math.max(1, Math.ceil(vehicles / VEHICLES_PER_GATEWAY)))),
    peerSeconds: num("peer-seconds", values["peer-seconds"], quick ? 8 : 30),
    warmupSeconds: quick ? 3 : 10,
    skipPeers: values["skip-peers"] === true,
    profile: values.profile === true,
    vehicleListener: listener,
  };
}

const fmt = (n: number, digits = 0) =>
  Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }) : "n/a";
const say = (line: string) => process.stdout.write(`${line}\n`);
/** A deterministic spread in [0, 1): runs compare. */
const spread = (i: number, salt: number) => {
  let h = Math.imul(i ^ Math.imul(salt, 0x9e3779b9), 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 4294967296;
};

type VehicleWorker = Child<VehicleCommand, VehicleEvent>;
type Watcher = Child<WatchCommand, WatchEvent>;

/** Descriptors `pid` holds open now (0 when gone). */
function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

/** Least-squares slope of y over x. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  if (n < 2) return NaN;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den > 0 ? num / den : NaN;
}

/**
 * Every process of the platform by name, read from /proc: CPU seconds, resident bytes, descriptors.
 * PostgreSQL is its postmaster plus its backends (the children alive at each reading).
 */
class ProcessBook {
  readonly pids = new Map<string, number>();
  postgres = 0;
  readonly samples: { t: number; rss: Record<string, number>; fds: Record<string, number> }[] = [];
  set(name: string, pid: number | undefined): void {
    if (pid) this.pids.set(name, pid);
    else this.pids.delete(name);
  }
  private group(name: string, pid: number): number[] {
    return name === "postgres" ? [pid, ...childPids(pid, "postgres")] : [pid];
  }
  cpu(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [name, pid] of this.pids) out[name] = this.group(name, pid).reduce((s, p) => s + cpuSeconds(p), 0);
    return out;
  }
  sample(): void {
    const rss: Record<string, number> = {};
    const fds: Record<string, number> = {};
    for (const [name, pid] of this.pids) {
      const g = this.group(name, pid);
      rss[name] = g.reduce((s, p) => s + rssBytes(p), 0);
      fds[name] = g.reduce((s, p) => s + fdCount(p), 0);
    }
    this.samples.push({ t: performance.now(), rss, fds });
  }
  /** MB per hour of each process's RSS over the samples since `from` (a linear fit). */
  slopes(from: number): Record<string, number> {
    const s = this.samples.filter((x) => x.t >= from);
    const out: Record<string, number> = {};
    for (const name of this.pids.keys()) {
      const pts = s.filter((x) => x.rss[name] !== undefined);
      out[name] = slope(
        pts.map((x) => x.t / 3_600_000),
        pts.map((x) => x.rss[name]! / 1e6),
      );
    }
    return out;
  }
}

/** Sums CPU seconds by service: "gateway-3" counts as "gateway", "load-2" as "loadgen". */
const serviceOf = (name: string) => name.replace(/-\d+$/, "");

/** The gateways' and history's /metrics texts, read together: `batching` compares two readings. */
async function readPipelineMetrics(adminUrls: { gateways: string[]; history: string }) {
  const read = (url: string) => fetchMetrics(url).catch(() => "");
  return { gateways: await Promise.all(adminUrls.gateways.map(read)), history: await read(adminUrls.history) };
}

/**
 * How the pipeline batched between two readings: points per JetStream message (the gateways), rows
 * per history transaction, and the gateways' PubAck and in-gateway waits. Per-message costs (NATS,
 * the consumers' acks, a transaction's COMMIT) are shared by the points of a batch.
 */
function batching(before: PipelineMetrics, after: PipelineMetrics) {
  const gateways = (name: string) => addHistograms(before.gateways.map((b, i) => histogramBetween(b, after.gateways[i]!, name)));
  return {
    points: gateways("gateway_batch_points"),
    publish: gateways("gateway_publish_seconds"),
    ackWait: gateways("gateway_ack_wait_seconds"),
    rows: histogramBetween(before.history, after.history, "history_batch_rows"),
  };
}
type PipelineMetrics = Awaited<ReturnType<typeof readPipelineMetrics>>;

interface Window {
  ack: Histogram;
  watch: Histogram;
  watchByKind: Record<string, Histogram>;
  acked: number;
  sent: number;
  seconds: number;
  loadCpuMicros: number;
  loadSystemMicros: number;
  counters: VehicleEvent extends infer E ? (E extends { type: "report"; counters: infer C } ? C : never) : never;
  lastError: string;
}

/** Runs the whole bench; returns the figures it printed last. */
export async function runPlatformBench(argv: string[]): Promise<PlatformFigures> {
  const o = parseOptions(argv);
  const started = performance.now();
  const elapsed = () => `${((performance.now() - started) / 1000).toFixed(0)}s`;
  const cleanups: (() => Promise<unknown>)[] = [];
  const notes: string[] = [];
  const logDir = join(root, ".fleet", "logs");
  mkdirSync(logDir, { recursive: true });
  const f: PlatformFigures = {
    vehicles: o.vehicles,
    connections: 0,
    offered_points_per_s: o.rate,
    minutes: o.minutes,
    acked: 0,
    lost: NaN,
    duplicated: NaN,
    ack_p50_ms: NaN,
    ack_p99_ms: NaN,
    watch_p50_ms: NaN,
    watch_p99_ms: NaN,
    history_visible_p99_ms: NaN,
    nearby_p99_ms: NaN,
    gettrack_p99_ms: NaN,
    gateway_bytes_per_vehicle: NaN,
    loadgen_cpu_share: NaN,
    jetstream_puback_p99_ms: NaN,
    mosquitto_puback_p99_ms: NaN,
    mosquitto_bytes_per_connection: NaN,
    socketio_watch_p99_ms: NaN,
    redis_floor_watch_p99_ms: NaN,
    max_points_per_s_within_promises: NaN,
    tracker_behind: NaN,
    consumer_lag_max: NaN,
    services: {},
  };
  const extra: Record<string, number> = {};
  const curve: {
    rate: number;
    offered: number;
    acked: number;
    ackP99: number;
    watchP99: number;
    lagStart: number;
    lagEnd: number;
    bounded: boolean;
    cpuUs: number;
    restCores: number;
  }[] = [];
  const onSignal = () => {
    say("interrupted: stopping what the bench started");
    void Promise.allSettled(cleanups.reverse().map((c) => c())).then(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const book = new ProcessBook();
  book.set("bench", process.pid);
  const cores = navigator.hardwareConcurrency || 2;
  let mainCpu: Record<string, number> = {};

  try {
    say(
      `bench platform: ${fmt(o.vehicles)} vehicles each on its own connection, ${fmt(o.rate)} points/s, ${fmt(o.watchers)} watchers, ${o.minutes} min; ${cores} cores shared by everything; load average ${readLoad()}`,
    );
    say(`[${elapsed()}] starting NATS, Redis, PostgreSQL and S3 (stack helper)`);
    const stack: Stack = await startStack({ services: ["nats", "redis", "postgres", "s3"] });
    cleanups.push(() => stack.stop());
    book.set("nats", stack.pid("nats"));
    book.set("redis", stack.pid("redis"));
    book.set("postgres", stack.pid("postgres"));
    book.set("s3", stack.pid("s3"));
    const secret = randomBytes(24).toString("base64url");
    const keys = { secret, issuer: "fleet", audience: "fleet" };
    const env: Record<string, string> = {
      ...stack.env(),
      FLEET_JWT_SECRET: secret,
      LOG_LEVEL: "info",
      // Each gateway holds its share of the vehicles' connections, under the 20,000 descriptors of a process.
      FLEET_MAX_CONNECTIONS: "19000",
      // Every watcher holds the one bench token.
      TRACKER_WATCHES_PER_TOKEN: String(o.watchers + 100),
      // The archiver's schedule, shortened so that it runs during the phase (it finds nothing past the retention).
      ARCHIVE_INTERVAL: "1m",
    };
    const config = loadConfig(env);
    const profileDir = join(root, ".fleet", "profiles", `bench-platform-${Date.now().toString(36)}`);
    const profileEnv = (name: string): Record<string, string> => {
      if (!o.profile) return {};
      mkdirSync(join(profileDir, name), { recursive: true });
      return { BUN_OPTIONS: `--cpu-prof --cpu-prof-dir=${join(profileDir, name)}` };
    };
    notes.push(
      o.vehicleListener === "lite"
        ? "vehicles on the gateways' vehicle port (GATEWAY_VEHICLE_PORT, lib/h2)"
        : "vehicles on the gateways' main port (node:http2)",
    );
    if (o.profile) notes.push(`gateway-1 and the tracker ran under --cpu-prof (slower than without): profiles in ${profileDir}`);

    // ---- the platform ----
    const port = await freePort();
    // The vehicles' port: the gateways' vehicle listener (lib/h2), or the main port.
    const vehiclePort = o.vehicleListener === "lite" ? await freePort() : port;
    const gateways: ServiceProcess[] = [];
    for (let i = 0; i < o.gateways; i++) {
      // One after the other: the first creates the stream, the others find it.
      const g = await startServiceProcess({
        service: "gateway",
        env: {
          ...env,
          GATEWAY_PORT: String(port),
          GATEWAY_REUSE_PORT: "true",
          ...(o.vehicleListener === "lite" ? { GATEWAY_VEHICLE_PORT: String(vehiclePort) } : {}),
          ...(i === 0 ? profileEnv("gateway") : {}),
        },
        logFile: join(logDir, `platform-gateway-${i + 1}.log`),
      });
      gateways.push(g);
      cleanups.push(() => g.stop("SIGTERM", 10_000));
      book.set(`gateway-${i + 1}`, g.pid);
    }
    const startService = async (service: "tracker" | "history" | "archiver", extraEnv: Record<string, string> = {}) => {
      const p = await startServiceProcess({
        service,
        env: { ...env, [`${service.toUpperCase()}_PORT`]: "0", ...extraEnv },
        logFile: join(logDir, `platform-${service}.log`),
      });
      cleanups.push(() => p.stop("SIGTERM", 10_000));
      book.set(service, p.pid);
      return p;
    };
    let tracker = await startService("tracker", profileEnv("tracker"));
    const history = await startService("history");
    const archiver = await startService("archiver");
    say(
      `[${elapsed()}] ${o.gateways} gateway process(es) on port ${port} (SO_REUSEPORT)${o.vehicleListener === "lite" ? `, vehicles on their vehicle port ${vehiclePort} (lib/h2)` : ", vehicles on it (node:http2)"}, tracker, history, archiver (logs: ${logDir}/platform-*.log)`,
    );
    const nc = await natsConnect({ servers: stack.natsUrl });
    cleanups.push(() => nc.close());
    const jsm = await jetstreamManager(nc);
    const lag = async (): Promise<{ tracker: number; history: number }> => {
      const one = async (name: string) => {
        try {
          const i = await jsm.consumers.info(POSITIONS_STREAM, name);
          return i.num_pending + i.num_ack_pending;
        } catch {
          return NaN;
        }
      };
      return { tracker: await one(CONSUMERS.tracker), history: await one(CONSUMERS.history) };
    };
    await Bun.sleep(2000);
    const gatewayRssBefore = gateways.reduce((s, g) => s + rssBytes(g.pid), 0);

    // ---- vehicles ----
    const workerCount = Math.ceil(o.vehicles / VEHICLES_PER_WORKER);
    const per = Math.ceil(o.vehicles / workerCount);
    const spawnVehicles = async (mode: "h2" | "mqtt", targets: { host: string; port: number }[], label: string) => {
      const ws: VehicleWorker[] = [];
      for (let i = 0; i < workerCount; i++) {
        const w = spawnChild<VehicleCommand, VehicleEvent>("platform-vehicles.ts");
        ws.push(w);
        cleanups.push(async () => w.proc.kill());
      }
      await Promise.all(ws.map((w) => w.next("hello", 20_000)));
      ws.forEach((w, i) => {
        w.send({
          type: "init",
          mode,
          targets,
          // Its own source address per process: 10,000 ports each, far from the ~28,000 of the range.
          localAddress: `127.0.0.${2 + i}`,
          keys,
          prefix: "v",
          first: i * per,
          count: Math.min(per, o.vehicles - i * per),
          total: o.vehicles,
          badShare: config.simBadFixes,
          reconnectShare: config.simDisconnects,
          orderEvery: 50,
        });
      });
      await Promise.all(ws.map((w) => w.next("ready", 300_000)));
      ws.forEach((w, i) => {
        book.set(`${label}-${i + 1}`, w.proc.pid ?? undefined);
      });
      const t0 = performance.now();
      // Each vehicle sends from the moment its stream is open, as a real one does: opening 100,000
      // takes minutes here, longer than the gateway lets a silent stream live (GATEWAY_IDLE_TIMEOUT).
      for (const w of ws) w.send({ type: "rate", rate: o.rate / ws.length });
      for (const w of ws) w.send({ type: "open", concurrency: 200, timeoutMs: 600_000 });
      const opened = await Promise.all(ws.map((w) => w.next("opened", 620_000)));
      const open = opened.reduce((s, e) => s + e.open, 0);
      const failed = opened.reduce((s, e) => s + e.failed, 0);
      say(
        `  ${fmt(open)} connections open, ${fmt(failed)} failed, in ${fmt((performance.now() - t0) / 1000, 1)} s${failed > 0 ? ` (last error: ${opened.map((e) => e.lastError).filter(Boolean)[0]})` : ""}`,
      );
      if (failed > 0) notes.push(`${label}: ${failed} vehicles could not connect (${opened.map((e) => e.lastError).filter(Boolean)[0]})`);
      return { ws, open };
    };
    say(`[${elapsed()}] ${fmt(o.vehicles)} vehicles from ${workerCount} load processes (127.0.0.2…), each its own connection and token`);
    const gwUrl = new URL(gateways[0]!.url);
    const { ws: vehicles, open } = await spawnVehicles("h2", [{ host: gwUrl.hostname, port: vehiclePort }], "load");
    f.connections = open;
    await Bun.sleep(2000);
    const gatewayRss = gateways.map((g) => rssBytes(g.pid));
    f.gateway_bytes_per_vehicle = (gatewayRss.reduce((a, b) => a + b, 0) - gatewayRssBefore) / Math.max(1, open);
    say(
      `  gateway resident memory: ${fmt(gatewayRssBefore / 1e6)} MB before, ${fmt(gatewayRss.reduce((a, b) => a + b, 0) / 1e6)} MB with them (${gatewayRss.map((r) => fmt(r / 1e6)).join(" / ")} MB): ${fmt(f.gateway_bytes_per_vehicle)} bytes per connected vehicle`,
    );
    const setRate = (ws: VehicleWorker[], rate: number) => {
      for (const w of ws) w.send({ type: "rate", rate: rate / ws.length });
    };

    // ---- watchers ----
    const watchToken = await mintWatchToken(keys, { all: true, subject: "platform-watchers" });
    const vehicleId = (i: number) => `v${i}`;
    const areaSpec = (w: number, salt: number): WatchSpec => {
      const c = cityCenter(Math.floor(spread(w, salt) * CITIES));
      return {
        kind: "area",
        lat: c.lat + (spread(w, salt + 1) - 0.5) * 0.02,
        lon: c.lon + (spread(w, salt + 2) - 0.5) * 0.03,
        radiusM: 500,
        ids: [],
      };
    };
    // gRPC: 45% vehicle watches, 15% areas; Connect-Web: 20% vehicles, 10% orders, 10% areas.
    const grpcVehicleSpecs: WatchSpec[] = [];
    const grpcAreaSpecs: WatchSpec[] = [];
    const webSpecs: WatchSpec[] = [];
    const nV = Math.round(o.watchers * 0.45);
    const nA = Math.round(o.watchers * 0.15);
    const nWebV = Math.round(o.watchers * 0.2);
    const nWebO = Math.round(o.watchers * 0.1);
    const nWebA = o.watchers - nV - nA - nWebV - nWebO;
    for (let w = 0; w < nV; w++) grpcVehicleSpecs.push({ kind: "vehicles", ids: [vehicleId(Math.floor(spread(w, 3) * o.vehicles))] });
    for (let w = 0; w < nA; w++) grpcAreaSpecs.push(areaSpec(w, 20));
    for (let w = 0; w < nWebV; w++) webSpecs.push({ kind: "vehicles", ids: [vehicleId(Math.floor(spread(w, 30) * o.vehicles))] });
    // Every 50th vehicle serves order o-<index> in its fleet (platform-vehicles.ts).
    for (let w = 0; w < nWebO; w++) {
      const index = Math.floor(spread(w, 40) * (o.vehicles / 50)) * 50;
      webSpecs.push({ kind: "vehicles", ids: [`order:${fleetOf(index)}/o-${index}`] });
    }
    for (let w = 0; w < nWebA; w++) webSpecs.push(areaSpec(w, 50));
    const startWatchers = async (file: string, mode: "grpc" | "redis", url: string, specs: WatchSpec[], label: string) => {
      const w = spawnChild<WatchCommand, WatchEvent>(file);
      cleanups.push(async () => w.proc.kill());
      await w.next("hello", 20_000);
      w.send({
        type: "init",
        mode,
        url,
        token: watchToken,
        channelPrefix: `${config.redisPrefix}pos:`,
        // gRPC: ten watches per HTTP/2 connection (the tracker allows 100).
        connections: Math.max(1, Math.ceil(specs.length / 10)),
        watches: specs,
      });
      const ready = await w.next("ready", 180_000);
      say(`  ${label}: ${ready.open} open, ${ready.failed} failed${ready.lastError ? ` (${ready.lastError})` : ""}`);
      if (ready.failed > 0) notes.push(`${label}: ${ready.failed} watches failed to open (${ready.lastError})`);
      book.set(label, w.proc.pid ?? undefined);
      return w;
    };
    say(`[${elapsed()}] ${fmt(o.watchers)} watchers on the tracker`);
    let watchers: [string, Watcher][] = [
      ["grpc vehicles", await startWatchers("watch-worker.ts", "grpc", tracker.url, grpcVehicleSpecs, "watch-grpc-vehicles")],
      ["grpc areas", await startWatchers("watch-worker.ts", "grpc", tracker.url, grpcAreaSpecs, "watch-grpc-areas")],
      // Bun's fetch holds 256 connections at once per process (BUN_CONFIG_MAX_HTTP_REQUESTS) and each
      // Connect-Web watch is a request of its own: 200 per process.
      ...(
        await Promise.all(
          Array.from({ length: Math.ceil(webSpecs.length / 200) }, (_, k) =>
            startWatchers(
              "platform-watchers.ts",
              "grpc",
              tracker.url,
              webSpecs.slice(k * 200, k * 200 + 200),
              `watch-connect-web-${k + 1}`,
            ),
          ),
        )
      ).map((w): [string, Watcher] => ["connect-web", w]),
    ];

    // ---- dispatcher queries and the history poller (in this process, at a steady rate) ----
    const dispatchToken = await mintWatchToken(keys, { all: true, dispatch: true, subject: "platform-dispatcher" });
    const auth = { authorization: `Bearer ${dispatchToken}` };
    const trackerClient = () => createClient(TrackerService, createGrpcTransport({ baseUrl: tracker.url }));
    let trackerRpc = trackerClient();
    const historyRpc = createClient(HistoryService, createGrpcTransport({ baseUrl: history.url }));
    let nearbyH = createHistogram();
    let trackH = createHistogram();
    let visibleH = createHistogram();
    let queryErrors = 0;
    let lastQueryError = "";
    let q = 0;
    const nearbyTimer = setInterval(() => {
      const c = cityCenter(Math.floor(spread(q, 60) * CITIES));
      const t0 = performance.now();
      const n = q++;
      trackerRpc
        .nearby(
          {
            area: { shape: { case: "circle", value: { lat: c.lat + (spread(n, 61) - 0.5) * 0.02, lon: c.lon, radiusM: 1000 } } },
            statuses: [VehicleStatus.AVAILABLE],
            limit: 10,
          },
          { headers: auth, timeoutMs: 10_000 },
        )
        .then(
          () => nearbyH.record(performance.now() - t0),
          (err) => {
            queryErrors++;
            lastQueryError = `Nearby: ${err instanceof Error ? err.message : String(err)}`;
          },
        );
    }, 50);
    const trackTimer = setInterval(() => {
      const n = q++;
      const now = Date.now();
      const t0 = performance.now();
      historyRpc
        .getTrack(
          { vehicleId: vehicleId(Math.floor(spread(n, 70) * o.vehicles)), from: timestampFromMs(now - 600_000), to: timestampFromMs(now) },
          { headers: auth, timeoutMs: 10_000 },
        )
        .then(
          () => trackH.record(performance.now() - t0),
          (err) => {
            queryErrors++;
            lastQueryError = `GetTrack: ${err instanceof Error ? err.message : String(err)}`;
          },
        );
    }, 200);
    // History-visible: 200 vehicles' newest row, polled every 250 ms; a new one is visible now, sent at its recorded_at.
    const sql = postgres(stack.databaseUrl, { max: 2, onnotice: () => {} });
    cleanups.push(() => sql.end());
    const sampled = Array.from({ length: Math.min(200, o.vehicles) }, (_, i) => vehicleId(Math.floor(spread(i, 80) * o.vehicles)));
    const newest = new Map<string, number>();
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const t = Date.now();
        try {
          const rows = await sql<{ v: string; at: Date | null }[]>`
            SELECT v, (SELECT max(recorded_at) FROM positions WHERE vehicle_id = v) AS at FROM unnest(${sampled}::text[]) AS v`;
          for (const r of rows) {
            if (!r.at) continue;
            const at = r.at.getTime();
            const before = newest.get(r.v);
            if (before !== undefined && at > before) visibleH.record(t - at);
            newest.set(r.v, at);
          }
        } catch (err) {
          queryErrors++;
          lastQueryError = `history poll: ${err instanceof Error ? err.message : String(err)}`;
        }
        await Bun.sleep(250);
      }
    })();
    cleanups.push(async () => {
      polling = false;
      clearInterval(nearbyTimer);
      clearInterval(trackTimer);
      await poller;
    });

    /** A measured window: everyone records from now until `report`. */
    const beginWindow = () => {
      for (const w of vehicles) w.send({ type: "record" });
      for (const [, w] of watchers) w.send({ type: "record" });
      nearbyH = createHistogram();
      trackH = createHistogram();
      visibleH = createHistogram();
    };
    const endWindow = async (): Promise<Window> => {
      for (const w of vehicles) w.send({ type: "report" });
      for (const [, w] of watchers) w.send({ type: "report" });
      const reports = await Promise.all(vehicles.map((w) => w.next("report", 30_000)));
      const wr = await Promise.all(watchers.map(([, w]) => w.next("report", 30_000)));
      const ack = createHistogram();
      const watch = createHistogram();
      const watchByKind: Record<string, Histogram> = {};
      for (const r of reports) ack.merge(r.histogram);
      wr.forEach((r, i) => {
        watch.merge(r.histogram);
        watchByKind[watchers[i]![0]] ??= createHistogram();
        watchByKind[watchers[i]![0]]!.merge(r.histogram);
        if (r.errors > 0) notes.push(`${watchers[i]![0]} watchers: ${r.errors} errors (last: ${r.lastError})`);
      });
      const counters = { ...reports[0]!.counters };
      for (const r of reports.slice(1)) for (const k of Object.keys(counters) as (keyof typeof counters)[]) counters[k] += r.counters[k];
      return {
        ack,
        watch,
        watchByKind,
        acked: reports.reduce((s, r) => s + r.ackedInWindow, 0),
        sent: reports.reduce((s, r) => s + r.sentInWindow, 0),
        seconds: reports.reduce((s, r) => s + r.seconds, 0) / reports.length,
        loadCpuMicros: reports.reduce((s, r) => s + r.cpuMicros, 0),
        loadSystemMicros: reports.reduce((s, r) => s + r.systemMicros, 0),
        counters,
        lastError: reports.map((r) => r.lastError).find(Boolean) ?? "",
      };
    };

    // ---- main phase ----
    say(`[${elapsed()}] main phase: ${fmt(o.rate)} points/s, ${o.warmupSeconds} s warm-up, then ${o.minutes} min measured`);
    setRate(vehicles, o.rate);
    await Bun.sleep(o.warmupSeconds * 1000);
    beginWindow();
    const adminUrls = { gateways: gateways.map((g) => g.adminUrl), history: history.adminUrl };
    const pipeline0 = await readPipelineMetrics(adminUrls);
    const cpu0 = book.cpu();
    const busy0 = machineBusySeconds();
    const mainStart = performance.now();
    const lags: { t: number; tracker: number; history: number }[] = [];
    const sampleEvery = Math.max(2000, Math.min(30_000, (o.minutes * 60_000) / 60));
    const mainEnd = mainStart + o.minutes * 60_000;
    let lastLine = 0;
    while (performance.now() < mainEnd) {
      await Bun.sleep(Math.min(sampleEvery, mainEnd - performance.now()));
      book.sample();
      const l = await lag();
      lags.push({ t: performance.now(), ...l });
      if (performance.now() - lastLine > 30_000 || performance.now() >= mainEnd) {
        lastLine = performance.now();
        const s = book.samples.at(-1)!;
        say(
          `  [${elapsed()}] consumer lag (messages pending + unacked): tracker ${fmt(l.tracker)}, history ${fmt(l.history)}; RSS MB: ${Object.entries(
            s.rss,
          )
            .filter(([k]) => !k.startsWith("load") && !k.startsWith("watch"))
            .map(([k, v]) => `${k} ${fmt(v / 1e6)}`)
            .join(", ")}`,
        );
      }
    }
    const cpu1 = book.cpu();
    const busy1 = machineBusySeconds();
    const b = batching(pipeline0, await readPipelineMetrics(adminUrls));
    const main = await endWindow();
    extra.pointsPerMessage = b.points.sum / b.points.count;
    extra.rowsPerTransaction = b.rows.sum / b.rows.count;
    extra.messagesPerS = b.points.count / ((performance.now() - mainStart) / 1000);
    // Where an ack's time goes: PubAck round trip, and the longest wait in the gateway (linger + publish + PubAck) per batch.
    extra.publishP50 = bucketBound(b.publish, 0.5) * 1000;
    extra.publishP99 = bucketBound(b.publish, 0.99) * 1000;
    extra.inGatewayP99 = bucketBound(b.ackWait, 0.99) * 1000;
    say(
      `  batching in the main phase: ${fmt(extra.messagesPerS)} JetStream messages/s of ${fmt(extra.pointsPerMessage!, 1)} points each (gateways), ${fmt(extra.rowsPerTransaction!, 1)} rows per history transaction; PubAck p50 / p99 ≤ ${fmt(extra.publishP50, 1)} / ${fmt(extra.publishP99, 1)} ms, a batch's longest wait in the gateway p99 ≤ ${fmt(extra.inGatewayP99, 1)} ms (the gateways' histograms: bucket bounds)`,
    );
    const mainSeconds = (performance.now() - mainStart) / 1000;
    mainCpu = Object.fromEntries(Object.keys(cpu1).map((k) => [k, cpu1[k]! - (cpu0[k] ?? 0)]));
    // What the machine's other processes (other users of this shared box) used meanwhile.
    extra.restCores = Math.max(0, (busy1 - busy0 - Object.values(mainCpu).reduce((a, b) => a + b, 0)) / mainSeconds);
    extra.busyCores = (busy1 - busy0) / mainSeconds;
    if (extra.restCores > 0.25)
      notes.push(
        `other processes on the machine used ${fmt(extra.restCores, 2)} cores during the main phase: its figures are worse than a quiet machine's`,
      );
    f.acked = main.acked;
    f.offered_points_per_s = main.sent / main.seconds;
    f.ack_p50_ms = main.ack.quantile(0.5);
    f.ack_p99_ms = main.ack.quantile(0.99);
    f.watch_p50_ms = main.watch.quantile(0.5);
    f.watch_p99_ms = main.watch.quantile(0.99);
    f.nearby_p99_ms = nearbyH.quantile(0.99);
    f.gettrack_p99_ms = trackH.quantile(0.99);
    f.history_visible_p99_ms = visibleH.quantile(0.99);
    f.loadgen_cpu_share = main.loadCpuMicros / 1e6 / (main.seconds * cores);
    f.consumer_lag_max = Math.max(...lags.map((l) => Math.max(l.tracker, l.history)));
    extra.nearbyCount = nearbyH.count;
    extra.trackCount = trackH.count;
    extra.visibleCount = visibleH.count;
    extra.visibleP50 = visibleH.quantile(0.5);
    extra.nearbyP50 = nearbyH.quantile(0.5);
    extra.trackP50 = trackH.quantile(0.5);
    extra.watchEvents = main.watch.count;
    const lastRss = book.samples.at(-1)!;
    // The second half of the phase: start-up growth (pools, caches, JIT) is not a leak.
    const slopes = book.slopes(mainStart + (performance.now() - mainStart) / 2);
    // Per service: CPU µs per acked point, RSS at the end, its slope, descriptors.
    const perService: Record<string, { cpu: number; rss: number; slope: number; fds: number }> = {};
    for (const name of Object.keys(mainCpu)) {
      const s = serviceOf(name);
      const e = (perService[s] ??= { cpu: 0, rss: 0, slope: 0, fds: 0 });
      e.cpu += mainCpu[name]!;
      e.rss += lastRss.rss[name] ?? 0;
      e.slope += Number.isFinite(slopes[name]) ? slopes[name]! : 0;
      e.fds += lastRss.fds[name] ?? 0;
    }
    for (const [s, e] of Object.entries(perService))
      f.services[s] = {
        cpu_us_per_point: (e.cpu * 1e6) / Math.max(1, main.acked),
        rss_mb: e.rss / 1e6,
        rss_mb_per_hour: e.slope,
        fds: e.fds,
      };
    const firstFds = book.samples.find((x) => x.t >= mainStart)?.fds ?? {};
    extra.fdGrowth = Object.entries(lastRss.fds).reduce((m, [k, v]) => Math.max(m, v - (firstFds[k] ?? v)), 0);
    say(
      `  => acked ${fmt(main.acked)} points in ${fmt(mainSeconds)} s (${fmt(main.acked / main.seconds)}/s); ack p50 ${fmt(f.ack_p50_ms, 2)} ms, p99 ${fmt(f.ack_p99_ms, 2)} ms; watch p50 ${fmt(f.watch_p50_ms, 1)} ms, p99 ${fmt(f.watch_p99_ms, 1)} ms (${fmt(main.watch.count)} updates); history visible p99 ${fmt(f.history_visible_p99_ms)} ms; Nearby p99 ${fmt(f.nearby_p99_ms, 2)} ms; GetTrack p99 ${fmt(f.gettrack_p99_ms, 2)} ms`,
    );
    say(
      `  => vehicles: ${fmt(main.counters.rejected)} bad fixes refused (${fmt(main.counters.unexpectedRejections)} other refusals), ${fmt(main.counters.reconnects)} reconnects, ${fmt(main.counters.skipped)} points skipped (no open stream or window), ${fmt(main.counters.streamErrors)} stream errors${main.lastError ? ` (last: ${main.lastError})` : ""}`,
    );
    say(
      `  => load generators used ${fmt(main.loadCpuMicros / 1e6 / main.seconds, 2)} cores, ${fmt(f.loadgen_cpu_share * 100, 1)}% of the box, ${fmt((main.loadSystemMicros * 100) / Math.max(1, main.loadCpuMicros))}% of it in the kernel (on loopback a send also runs the receiving side's TCP path: the gateways' share of it is charged here)`,
    );
    if (queryErrors > 0) notes.push(`${queryErrors} dispatcher/history queries failed (last: ${lastQueryError})`);
    if (main.counters.unexpectedRejections > 0)
      notes.push(`${main.counters.unexpectedRejections} points refused that were not bad fixes (${main.lastError})`);

    // ---- capacity curve ----
    for (const rate of o.steps) {
      say(`[${elapsed()}] capacity step ${fmt(rate)} points/s: 5 s warm-up, ${o.stepSeconds} s measured`);
      setRate(vehicles, rate);
      await Bun.sleep(5000);
      beginWindow();
      const c0 = book.cpu();
      const b0 = machineBusySeconds();
      const s0 = performance.now();
      const stepLags: number[] = [];
      const end = performance.now() + o.stepSeconds * 1000;
      while (performance.now() < end) {
        const l = await lag();
        stepLags.push(Math.max(l.tracker, l.history));
        await Bun.sleep(Math.min(2000, Math.max(0, end - performance.now())));
      }
      const l = await lag();
      stepLags.push(Math.max(l.tracker, l.history));
      const c1 = book.cpu();
      const b1 = machineBusySeconds();
      const ours = Object.keys(c1).reduce((s, k) => s + c1[k]! - (c0[k] ?? 0), 0);
      const restCores = Math.max(0, (b1 - b0 - ours) / ((performance.now() - s0) / 1000));
      const w = await endWindow();
      const cpuAll = Object.keys(c1)
        .filter((k) => !k.startsWith("load") && !k.startsWith("watch") && k !== "bench")
        .reduce((s, k) => s + c1[k]! - (c0[k] ?? 0), 0);
      // Bounded: the lag did not grow over the step by more than a tenth (a lag under 100 messages,
      // a few batches in flight, counts as none). A lag already large but flat is bounded, and says
      // so beside the figure.
      const bounded = stepLags.at(-1)! <= Math.max(100, stepLags[0]! * 1.1);
      const row = {
        rate,
        offered: w.sent / w.seconds,
        acked: w.acked / w.seconds,
        ackP99: w.ack.quantile(0.99),
        watchP99: w.watch.quantile(0.99),
        lagStart: stepLags[0]!,
        lagEnd: stepLags.at(-1)!,
        bounded,
        cpuUs: (cpuAll * 1e6) / Math.max(1, w.acked),
        restCores,
      };
      curve.push(row);
      say(
        `  => offered ${fmt(row.offered)}/s, acked ${fmt(row.acked)}/s; ack p99 ${fmt(row.ackP99, 2)} ms; watch p99 ${fmt(row.watchP99, 1)} ms; lag ${fmt(row.lagStart)} → ${fmt(row.lagEnd)} (${bounded ? "bounded" : "GREW"}); platform CPU ${fmt(row.cpuUs, 1)} µs per point; other processes ${fmt(restCores, 2)} cores`,
      );
    }
    const within = curve.filter(
      (r) => r.ackP99 <= PROMISES.ackP99Ms && r.watchP99 <= PROMISES.watchP99Ms && r.bounded && r.acked >= 0.95 * r.rate,
    );
    f.max_points_per_s_within_promises = within.length > 0 ? Math.max(...within.map((r) => r.rate)) : curve.length > 0 ? 0 : NaN;
    setRate(vehicles, o.rate);

    // ---- the live fan-out's peers: the same vehicle watches three ways, one after the other ----
    if (!o.skipPeers) {
      for (const [, w] of watchers) {
        w.send({ type: "close" });
        await w.next("closed", 10_000).catch(() => undefined);
        w.proc.kill();
      }
      watchers = [];
      say(
        `[${elapsed()}] live fan-out peers: the tracker restarted with TRACKER_REDIS_PUBSUB=true (its script also PUBLISHes each update on the vehicle's channel); the same ${fmt(grpcVehicleSpecs.length + nWebV)} vehicle watches as raw Redis subscribers, as Socket.io watchers, and as the tracker's gRPC watches, ${o.peerSeconds} s each, one after the other so that none pays for another's CPU`,
      );
      await tracker.stop("SIGTERM", 15_000);
      tracker = await startService("tracker", { TRACKER_REDIS_PUBSUB: "true" });
      trackerRpc = trackerClient();
      const floorSpecs = [...grpcVehicleSpecs, ...webSpecs.filter((s) => s.kind === "vehicles" && !s.ids[0]!.startsWith("order:"))];
      const fanout = async (label: string, start: () => Promise<Watcher>, pids: Record<string, number> = {}) => {
        watchers = [[label, await start()]];
        await Bun.sleep(3000);
        beginWindow();
        const c0 = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, cpuSeconds(p)]));
        const t0 = performance.now();
        await Bun.sleep(o.peerSeconds * 1000);
        const cores = Object.entries(pids).map(
          ([k, p]) => `${k} ${fmt((cpuSeconds(p) - c0[k]!) / ((performance.now() - t0) / 1000), 2)} cores`,
        );
        const w = await endWindow();
        for (const [, x] of watchers) {
          x.send({ type: "close" });
          await x.next("closed", 10_000).catch(() => undefined);
          x.proc.kill();
        }
        watchers = [];
        const h = w.watchByKind[label]!;
        say(
          `  => ${label}: p50 ${fmt(h.quantile(0.5), 1)} ms, p99 ${fmt(h.quantile(0.99), 1)} ms (${fmt(h.count)} updates; vehicle ack p99 ${fmt(w.ack.quantile(0.99), 2)} ms)${cores.length ? `; ${cores.join(", ")}` : ""}`,
        );
        return h;
      };
      const redisH = await fanout("raw Redis subscribers", () =>
        startWatchers("watch-worker.ts", "redis", stack.redisUrl, floorSpecs, "watch-redis"),
      );
      f.redis_floor_watch_p99_ms = redisH.quantile(0.99);
      extra.redisFloorP50 = redisH.quantile(0.5);
      // The Socket.io server: its own process, as it would run.
      const server = Bun.spawn(
        [process.execPath, join(import.meta.dir, "platform-socketio.ts"), "server", stack.redisUrl, `${config.redisPrefix}pos:`],
        {
          cwd: root,
          stdout: "pipe",
          stderr: "inherit",
        },
      );
      cleanups.push(async () => server.kill());
      const reader = server.stdout.getReader();
      const first = await Promise.race([reader.read(), Bun.sleep(20_000).then(() => undefined)]);
      reader.releaseLock();
      const listening = first?.value ? (JSON.parse(new TextDecoder().decode(first.value).split("\n")[0]!) as { listening: number }) : null;
      if (!listening?.listening) notes.push("the Socket.io server did not start: its figures are missing");
      else {
        book.set("socketio", server.pid);
        const sioH = await fanout(
          "Socket.io (Redis adapter, socket.io-client)",
          () => startWatchers("platform-socketio.ts", "grpc", `http://127.0.0.1:${listening.listening}`, floorSpecs, "watch-socketio"),
          { "socket.io server": server.pid, redis: stack.pid("redis")!, tracker: tracker.pid },
        );
        f.socketio_watch_p99_ms = sioH.quantile(0.99);
        extra.socketioP50 = sioH.quantile(0.5);
        book.set("socketio", undefined);
      }
      server.kill();
      const grpcH = await fanout(
        "the tracker's gRPC watches",
        () => startWatchers("watch-worker.ts", "grpc", tracker.url, floorSpecs, "watch-grpc-floor"),
        { tracker: tracker.pid, redis: stack.pid("redis")! },
      );
      extra.grpcBesideFloorP99 = grpcH.quantile(0.99);
    }

    // ---- zero loss ----
    say(`[${elapsed()}] zero-loss check: vehicles stop, every good point acked; sinks catch up; PostgreSQL and Redis read`);
    polling = false;
    clearInterval(nearbyTimer);
    clearInterval(trackTimer);
    await poller;
    setRate(vehicles, 0);
    for (const w of vehicles) w.send({ type: "settle", timeoutMs: 30_000 });
    const settled = await Promise.all(vehicles.map((w) => w.next("settled", 40_000)));
    const behind = settled.reduce((s, e) => s + e.behind, 0);
    const sum = (k: "notOpen" | "unacked") => settled.reduce((s, e) => s + e[k], 0);
    const total = (k: keyof Window["counters"]) => settled.reduce((s, e) => s + e.counters[k], 0);
    say(
      `  vehicles over the run: ${fmt(total("sent"))} points sent, ${fmt(total("rejected"))} refused, ${fmt(total("reconnects"))} reconnects, ${fmt(total("streamErrors"))} stream errors; now ${fmt(sum("notOpen"))} without an open stream, ${fmt(sum("unacked"))} with good points unacked${settled.map((e) => e.lastError).find(Boolean) ? ` (last error: ${settled.map((e) => e.lastError).find(Boolean)})` : ""}`,
    );
    if (behind > 0) notes.push(`${behind} vehicles still had unacked points 30 s after the load stopped`);
    for (const w of vehicles) w.send({ type: "tally" });
    const tallies: VehicleTally[] = (await Promise.all(vehicles.map((w) => w.next("tally", 60_000)))).flatMap((e) => e.vehicles);
    const deadline = performance.now() + 300_000;
    let caughtUp = true;
    for (;;) {
      const l = await lag();
      if (l.tracker === 0 && l.history === 0) break;
      if (performance.now() > deadline) {
        notes.push(
          `the sinks were still behind 5 minutes after the load stopped (tracker ${fmt(l.tracker)}, history ${fmt(l.history)} messages): the acked points not yet in PostgreSQL are in JetStream, waiting, not lost; the check cannot judge them`,
        );
        caughtUp = false;
        break;
      }
      await Bun.sleep(500);
    }
    const loss = await zeroLossCheck(sql, tallies);
    // With history still behind, what is missing is unwritten, not lost: no figure rather than a wrong one.
    f.lost = caughtUp ? loss.lost : Number.NaN;
    extra.unwritten = caughtUp ? 0 : loss.lost;
    f.duplicated = loss.duplicated;
    f.acked = Math.max(f.acked, 0);
    extra.ackedAll = loss.expected;
    const redis = new Redis(stack.redisUrl);
    cleanups.push(async () => redis.disconnect());
    f.tracker_behind = await trackerCheck(redis, config.redisPrefix, tallies);
    say(
      `  => ${fmt(loss.expected)} good points acked over the whole run: ${fmt(loss.lost)} missing from PostgreSQL${caughtUp ? "" : " (history still behind: not yet written)"}, ${fmt(loss.duplicated)} stored twice, ${fmt(loss.extra)} stored beyond what was acked; the tracker is behind on ${fmt(f.tracker_behind)} of ${fmt(tallies.length)} vehicles`,
    );

    for (const w of vehicles) w.send({ type: "close" });
    await Promise.all(vehicles.map((w) => w.next("closed", 10_000).catch(() => undefined)));
    for (const w of vehicles) w.proc.kill();

    if (!o.skipPeers) {
      // ---- ingest peers: the platform's services stop so that the peers have the cores ----
      say(`[${elapsed()}] stopping the services; the ingest peers run on the same machine`);
      await Promise.all([...gateways.map((g) => g.stop("SIGTERM", 10_000)), tracker.stop(), history.stop(), archiver.stop()]);
      say(`[${elapsed()}] JetStream's own PubAck: one client, one message per point (message id), ${fmt(o.rate)}/s for ${o.peerSeconds} s`);
      const js = await jetStreamPubAck(nc, jsm, o.rate, o.peerSeconds * 1000, o.vehicles);
      f.jetstream_puback_p99_ms = js.quantile(0.99);
      extra.jsP50 = js.quantile(0.5);
      say(`  => PubAck p50 ${fmt(extra.jsP50, 2)} ms, p99 ${fmt(f.jetstream_puback_p99_ms, 2)} ms (${fmt(js.count)} publishes)`);

      const brokers = Math.max(1, Math.ceil(o.vehicles / 19_000));
      say(
        `[${elapsed()}] Mosquitto: ${brokers} broker(s) (one process holds < 20,000 descriptors), ${fmt(o.vehicles)} MQTT connections, QoS 1 at ${fmt(o.rate)}/s`,
      );
      const mqs: Mosquitto[] = [];
      for (let i = 0; i < brokers; i++) {
        const m = await startMosquitto();
        mqs.push(m);
        cleanups.push(() => m.stop());
      }
      await Bun.sleep(500);
      const mqBefore = mqs.reduce((s, m) => s + rssBytes(m.pid), 0);
      const targets = mqs.map((m) => {
        const u = new URL(m.url);
        return { host: u.hostname, port: Number(u.port) };
      });
      const { ws: mqttVehicles, open: mqttOpen } = await spawnVehicles("mqtt", targets, "mqtt-load");
      await Bun.sleep(2000);
      const mqAfter = mqs.reduce((s, m) => s + rssBytes(m.pid), 0);
      f.mosquitto_bytes_per_connection = (mqAfter - mqBefore) / Math.max(1, mqttOpen);
      setRate(mqttVehicles, o.rate);
      await Bun.sleep(3000);
      for (const w of mqttVehicles) w.send({ type: "record" });
      await Bun.sleep(o.peerSeconds * 1000);
      for (const w of mqttVehicles) w.send({ type: "report" });
      const mr = await Promise.all(mqttVehicles.map((w) => w.next("report", 30_000)));
      const mh = createHistogram();
      for (const r of mr) mh.merge(r.histogram);
      f.mosquitto_puback_p99_ms = mh.quantile(0.99);
      extra.mqttP50 = mh.quantile(0.5);
      extra.mqttAcked = mr.reduce((s, r) => s + r.ackedInWindow / r.seconds, 0);
      say(
        `  => ${fmt(mqttOpen)} connections, ${fmt(f.mosquitto_bytes_per_connection)} bytes each; PUBACK p50 ${fmt(extra.mqttP50, 2)} ms, p99 ${fmt(f.mosquitto_puback_p99_ms, 2)} ms at ${fmt(extra.mqttAcked)}/s`,
      );
      for (const w of mqttVehicles) w.send({ type: "close" });
      await Promise.all(mqttVehicles.map((w) => w.next("closed", 10_000).catch(() => undefined)));
      for (const w of mqttVehicles) w.proc.kill();
      await Promise.all(mqs.map((m) => m.stop()));
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    for (const c of cleanups.reverse()) await c().catch((err) => say(`cleanup: ${err instanceof Error ? err.message : String(err)}`));
  }

  if (o.profile) {
    const dir = notes.find((n) => n.includes("--cpu-prof"))?.split("profiles in ")[1];
    for (const name of ["gateway", "tracker"]) {
      const d = dir ? join(dir, name) : "";
      const file = d ? readdirSync(d).find((n) => n.endsWith(".cpuprofile")) : undefined;
      if (!file) {
        say(`no ${name} profile written (it did not exit cleanly?)`);
        continue;
      }
      const { functions, files } = summarizeProfile(join(d, file), 15);
      say(`${name} profile ${join(d, file)}, self time by file:`);
      for (const l of files) say(`  ${(l.share * 100).toFixed(1).padStart(5)}%  ${l.name}`);
      say("  by function:");
      for (const l of functions) say(`  ${(l.share * 100).toFixed(1).padStart(5)}%  ${l.name}`);
    }
  }
  printTable(f, extra, curve, mainCpu, o, notes);
  const round = (k: string, v: number) =>
    k.endsWith("_ms") || k.endsWith("share") ? Number(v.toFixed(k.endsWith("share") ? 3 : 2)) : Math.round(v);
  const out = {
    ...Object.fromEntries(Object.entries(f).map(([k, v]) => [k, typeof v === "number" ? round(k, v) : v])),
    services: Object.fromEntries(
      Object.entries(f.services).map(([k, s]) => [
        k,
        {
          cpu_us_per_point: Number(s.cpu_us_per_point.toFixed(1)),
          rss_mb: Math.round(s.rss_mb),
          rss_mb_per_hour: Number(s.rss_mb_per_hour.toFixed(1)),
          fds: s.fds,
        },
      ]),
    ),
  } as PlatformFigures;
  // JSON has no NaN: a figure that was not measured is null.
  say(JSON.stringify(out, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? null : v)));
  return out;
}

/**
 * Every good point a vehicle was told is acked is in PostgreSQL exactly once: per vehicle, the
 * distinct seqs up to its durable seq must number its expected count, and no (vehicle, seq) twice.
 * chaos/checker.ts's rule, counted inside PostgreSQL: at 100,000 vehicles the run holds millions of
 * rows, which the checker's row-by-row read into the process would carry over the wire.
 */
async function zeroLossCheck(
  sql: postgres.Sql,
  tallies: VehicleTally[],
): Promise<{ expected: number; lost: number; duplicated: number; extra: number }> {
  return sql.begin(async (tx) => {
    await tx`CREATE TEMP TABLE acked (vehicle_id text PRIMARY KEY, durable int, expected int) ON COMMIT DROP`;
    for (let i = 0; i < tallies.length; i += 10_000) {
      const chunk = tallies.slice(i, i + 10_000).map((t) => ({ vehicle_id: t.id, durable: t.durable, expected: t.expected }));
      await tx`INSERT INTO acked ${tx(chunk, "vehicle_id", "durable", "expected")}`;
    }
    const [r] = await tx<{ expected: string; lost: string; duplicated: string; extra: string }[]>`
      WITH stored AS (
        SELECT p.vehicle_id,
               count(*) FILTER (WHERE p.seq <= a.durable) AS n,
               count(DISTINCT p.seq) FILTER (WHERE p.seq <= a.durable) AS d,
               count(*) FILTER (WHERE p.seq > a.durable) AS beyond
        FROM positions p JOIN acked a USING (vehicle_id) GROUP BY p.vehicle_id)
      SELECT coalesce(sum(a.expected), 0) AS expected,
             coalesce(sum(greatest(a.expected - coalesce(s.d, 0), 0)), 0) AS lost,
             coalesce(sum(coalesce(s.n, 0) - coalesce(s.d, 0)), 0) AS duplicated,
             coalesce(sum(coalesce(s.beyond, 0)), 0) AS extra
      FROM acked a LEFT JOIN stored s USING (vehicle_id)`;
    return { expected: Number(r!.expected), lost: Number(r!.lost), duplicated: Number(r!.duplicated), extra: Number(r!.extra) };
  });
}

/** Vehicles whose state in Redis (the tracker's st:<bucket> hashes, seq at byte 4) is not their newest acked good point. */
async function trackerCheck(redis: Redis, prefix: string, tallies: VehicleTally[]): Promise<number> {
  const seqs = new Map<string, number>();
  for (let b = 0; b < BUCKETS; b += 256) {
    const pipe = redis.pipeline();
    for (let k = b; k < Math.min(BUCKETS, b + 256); k++) pipe.hgetallBuffer(`${prefix}st:${k}`);
    for (const [, v] of (await pipe.exec()) ?? []) {
      for (const [id, rec] of Object.entries((v ?? {}) as Record<string, Buffer>)) seqs.set(id, rec.readUInt32LE(4));
    }
  }
  let behind = 0;
  // Behind: below the newest acked point. A newer one is fine: a point made durable whose ack the
  // vehicle did not get (its connection went) is stored and applied all the same.
  for (const t of tallies) if (t.newest > 0 && (seqs.get(t.id) ?? 0) < t.newest) behind++;
  return behind;
}

/**
 * JetStream's own PubAck latency at a steady rate: one client, one message per point with a
 * message id, into a file-storage stream shaped like the positions stream (the floor beneath the
 * gateway's ack). bench/jetstream-ceiling.ts measures how fast; this, how long at a given rate.
 */
async function jetStreamPubAck(
  nc: Awaited<ReturnType<typeof natsConnect>>,
  jsm: JetStreamManager,
  rate: number,
  durationMs: number,
  vehicles: number,
): Promise<Histogram> {
  const stream = "BENCH_PLATFORM_PUBACK";
  await jsm.streams.delete(stream).catch(() => {});
  await jsm.streams.add({ name: stream, subjects: ["bench.puback.>"], storage: StorageType.File, duplicate_window: 5 * 60 * 1e9 });
  const js = jetstream(nc);
  const h = createHistogram();
  const templates = Array.from({ length: Math.min(vehicles, 10_000) }, (_, i) => vehicleTemplate(`v${i}`, 52.5, 13.4));
  const subjects = templates.map((_, i) => `bench.puback.${partitionOf(`v${i}`, 4)}`);
  const seqs = new Uint32Array(templates.length);
  const start = performance.now();
  const warm = 2000;
  let offered = 0;
  let n = 0;
  const pending: Promise<unknown>[] = [];
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const t = performance.now();
      const due = Math.floor(((t - start) / 1000) * rate) - offered;
      for (let k = 0; k < due; k++) {
        const v = n++ % templates.length;
        const s = ++seqs[v]!;
        const t0 = performance.now();
        const record = t - start > warm;
        pending.push(
          js.publish(subjects[v]!, encodePosition(templates[v]!, s, Date.now()), { msgID: `pa-${v}-${s}` }).then(
            () => {
              if (record) h.record(performance.now() - t0);
            },
            () => {},
          ),
        );
      }
      offered += Math.max(0, due);
      if (pending.length > 10_000) pending.splice(0, pending.length - 10_000);
      if (t - start >= warm + durationMs) {
        clearInterval(timer);
        resolve();
      }
    }, 2);
  });
  await Promise.allSettled(pending);
  await jsm.streams.delete(stream).catch(() => {});
  return h;
}

function readLoad(): string {
  try {
    return require("node:fs").readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  } catch {
    return "n/a";
  }
}

function printTable(
  f: PlatformFigures,
  extra: Record<string, number>,
  curve: {
    rate: number;
    offered: number;
    acked: number;
    ackP99: number;
    watchP99: number;
    lagStart: number;
    lagEnd: number;
    bounded: boolean;
    cpuUs: number;
    restCores: number;
  }[],
  cpu: Record<string, number>,
  o: Options,
  notes: string[],
): void {
  const ok = (pass: boolean | null) => (pass === null ? "" : pass ? "ok" : "MISS");
  const known = (...xs: number[]) => xs.every((x) => Number.isFinite(x));
  say("");
  say(`| figure | measured | target | |`);
  say(`|---|---|---|---|`);
  const row = (a: string, b: string, c = "", d = "") => say(`| ${a} | ${b} | ${c} | ${d} |`);
  row("vehicles, each on its own connection", `${fmt(f.connections)} of ${fmt(f.vehicles)}`);
  row("offered points/s (measured)", fmt(f.offered_points_per_s));
  row(`points acked in the ${o.minutes} min main phase`, fmt(f.acked));
  row(
    "ack p50 / p99 (ms), send → ack",
    `${fmt(f.ack_p50_ms, 2)} / ${fmt(f.ack_p99_ms, 2)}`,
    `≤ JetStream PubAck p99 + 5 (${fmt(f.jetstream_puback_p99_ms + 5, 2)})`,
    ok(known(f.ack_p99_ms, f.jetstream_puback_p99_ms) ? f.ack_p99_ms <= f.jetstream_puback_p99_ms + 5 : null),
  );
  row(
    "watch p50 / p99 (ms), send → watcher",
    `${fmt(f.watch_p50_ms, 1)} / ${fmt(f.watch_p99_ms, 1)}`,
    `≤ Socket.io (${fmt(f.socketio_watch_p99_ms, 1)}) and ≤ 1.5 × Redis floor (${fmt(1.5 * f.redis_floor_watch_p99_ms, 1)})`,
    ok(
      known(f.watch_p99_ms, f.redis_floor_watch_p99_ms, f.socketio_watch_p99_ms)
        ? f.watch_p99_ms <= 1.5 * f.redis_floor_watch_p99_ms && f.watch_p99_ms <= f.socketio_watch_p99_ms
        : null,
    ),
  );
  row("Redis Pub/Sub floor, watch p99 (ms)", fmt(f.redis_floor_watch_p99_ms, 1), "reference");
  const same = extra.grpcBesideFloorP99 ?? Number.NaN;
  row(
    "the same vehicle watches through the tracker (gRPC), peers' phase, p99 (ms)",
    fmt(same, 1),
    "≤ Socket.io and ≤ 1.5 × Redis floor",
    ok(
      known(same, f.redis_floor_watch_p99_ms, f.socketio_watch_p99_ms)
        ? same <= 1.5 * f.redis_floor_watch_p99_ms && same <= f.socketio_watch_p99_ms
        : null,
    ),
  );
  row("Socket.io way (Redis adapter), watch p99 (ms)", fmt(f.socketio_watch_p99_ms, 1), "reference");
  row("history visible p50 / p99 (ms), polled every 250 ms", `${fmt(extra.visibleP50 ?? NaN)} / ${fmt(f.history_visible_p99_ms)}`);
  row("Nearby p50 / p99 (ms), 20/s", `${fmt(extra.nearbyP50 ?? NaN, 2)} / ${fmt(f.nearby_p99_ms, 2)}`);
  row("GetTrack p50 / p99 (ms), 5/s, last 10 min", `${fmt(extra.trackP50 ?? NaN, 2)} / ${fmt(f.gettrack_p99_ms, 2)}`);
  row(
    "gateway resident bytes per connected vehicle",
    fmt(f.gateway_bytes_per_vehicle),
    "≤ 10,240",
    ok(Number.isFinite(f.gateway_bytes_per_vehicle) ? f.gateway_bytes_per_vehicle <= 10_240 : null),
  );
  row("Mosquitto resident bytes per connection", fmt(f.mosquitto_bytes_per_connection), "reference");
  row("JetStream PubAck p99 (ms), one client at the same rate", fmt(f.jetstream_puback_p99_ms, 2), "reference");
  row("Mosquitto QoS 1 PUBACK p99 (ms), same connections and rate", fmt(f.mosquitto_puback_p99_ms, 2), "reference");
  row("load generators' share of the box", `${fmt(f.loadgen_cpu_share * 100, 1)}%`);
  row("consumer lag, most messages pending + unacked", fmt(f.consumer_lag_max));
  row(
    "lost / stored twice (every acked point in PostgreSQL once)",
    `${Number.isFinite(f.lost) ? fmt(f.lost) : `n/a (${fmt(extra.unwritten ?? Number.NaN)} not yet written: history behind)`} / ${fmt(f.duplicated)}`,
    "0 / 0",
    ok(known(f.lost, f.duplicated) ? f.lost === 0 && f.duplicated === 0 : null),
  );
  row(
    "vehicles the tracker is not at the newest point of",
    fmt(f.tracker_behind),
    "0",
    ok(Number.isFinite(f.tracker_behind) ? f.tracker_behind === 0 : null),
  );
  row(
    "highest rate with ack p99 ≤ 10 ms, watch p99 ≤ 50 ms, lag bounded",
    fmt(f.max_points_per_s_within_promises),
    `> ${fmt(16_700)}`,
    ok(Number.isFinite(f.max_points_per_s_within_promises) ? f.max_points_per_s_within_promises > 16_700 : null),
  );
  say("");
  say("| service | CPU µs per point | RSS MB | RSS MB/hour | descriptors |");
  say("|---|---|---|---|---|");
  for (const [s, v] of Object.entries(f.services))
    say(`| ${s} | ${fmt(v.cpu_us_per_point, 1)} | ${fmt(v.rss_mb)} | ${fmt(v.rss_mb_per_hour, 1)} | ${fmt(v.fds)} |`);
  if (curve.length > 0) {
    say("");
    say("| offered points/s | acked/s | ack p99 ms | watch p99 ms | lag start → end | platform CPU µs/point | other processes (cores) |");
    say("|---|---|---|---|---|---|---|");
    for (const r of curve)
      say(
        `| ${fmt(r.rate)} | ${fmt(r.acked)} | ${fmt(r.ackP99, 2)} | ${fmt(r.watchP99, 1)} | ${fmt(r.lagStart)} → ${fmt(r.lagEnd)} ${r.bounded ? "" : "(grew)"} | ${fmt(r.cpuUs, 1)} | ${fmt(r.restCores, 2)} |`,
      );
  }
  const total = Object.values(cpu).reduce((a, b) => a + b, 0);
  if (total > 0)
    say(
      `CPU of the main phase by process (share of all CPU used): ${Object.entries(cpu)
        .sort((a, b) => b[1] - a[1])
        .map(([k, v]) => `${k} ${fmt((v * 100) / total, 1)}%`)
        .join(", ")}`,
    );
  say(
    `machine during the main phase: ${fmt(extra.busyCores ?? NaN, 2)} cores busy, of which other processes ${fmt(extra.restCores ?? NaN, 2)}; load average after the run: ${readLoad()}`,
  );
  for (const n of notes) say(`note: ${n}`);
  say("");
}
