/**
 * Configuration: parsed once, at start, from environment variables into a typed, frozen
 * object. A wrong value throws a ConfigError naming the variable; `main.ts` files print it
 * and exit. No other code reads the environment.
 *
 * Every variable, its default and its meaning is listed in `configHelp()` (printed by
 * `fleet --help` and in the README).
 */
import type { LogLevel } from "./log";

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = "ConfigError";
  }
}

type Env = Record<string, string | undefined>;

interface Spec<T> {
  name: string;
  help: string;
  def: T;
  parse: (raw: string, name: string) => T;
}

const specs: Spec<unknown>[] = [];

function define<T>(name: string, def: T, help: string, parse: (raw: string, name: string) => T): Spec<T> {
  const spec = { name, def, help, parse };
  specs.push(spec as Spec<unknown>);
  return spec;
}

function str(name: string, def: string, help: string): Spec<string> {
  return define(name, def, help, (raw) => raw);
}

function int(name: string, def: number, help: string, min = 0, max = Number.MAX_SAFE_INTEGER): Spec<number> {
  return define(name, def, help, (raw, n) => {
    const v = Number(raw);
    if (!Number.isInteger(v) || v < min || v > max) {
      throw new ConfigError(n, `expected a whole number from ${min} to ${max}, got "${raw}"`);
    }
    return v;
  });
}

function num(name: string, def: number, help: string, min = 0): Spec<number> {
  return define(name, def, help, (raw, n) => {
    const v = Number(raw);
    if (!Number.isFinite(v) || v < min) throw new ConfigError(n, `expected a number ≥ ${min}, got "${raw}"`);
    return v;
  });
}

const durationUnits: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses "250ms", "30s", "5m", "2h", "7d" (or a bare number of milliseconds) into milliseconds. */
export function parseDuration(raw: string, name = "duration"): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(raw.trim());
  if (!m) throw new ConfigError(name, `expected a duration like 250ms, 30s, 5m, 2h or 7d, got "${raw}"`);
  return Math.round(Number(m[1]) * durationUnits[m[2] ?? "ms"]!);
}

function duration(name: string, def: string, help: string): Spec<number> {
  return define(name, parseDuration(def), `${help} (default ${def})`, parseDuration);
}

function bool(name: string, def: boolean, help: string): Spec<boolean> {
  return define(name, def, help, (raw, n) => {
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off)$/i.test(raw)) return false;
    throw new ConfigError(n, `expected true or false, got "${raw}"`);
  });
}

function oneOf<T extends string>(name: string, def: T, values: readonly T[], help: string): Spec<T> {
  return define(name, def, help, (raw, n) => {
    if (!(values as readonly string[]).includes(raw)) {
      throw new ConfigError(n, `expected one of ${values.join(", ")}, got "${raw}"`);
    }
    return raw as T;
  });
}

const DEV_SECRET = "fleet-local-development-secret-change-me";

const S = {
  logLevel: oneOf<LogLevel>("LOG_LEVEL", "info", ["debug", "info", "warn", "error"], "log level"),
  host: str("FLEET_HOST", "127.0.0.1", "address the services listen on"),
  adminHost: str(
    "FLEET_ADMIN_HOST",
    "127.0.0.1",
    "address of every service's admin port (/metrics, /healthz): keep it off the public network",
  ),
  // Limits of every service's public port (each service counts its own).
  maxConnections: int(
    "FLEET_MAX_CONNECTIONS",
    10_000,
    "connections one service's port holds open at once; past it a new one is closed at once (a process has 20,000 file descriptors here)",
    1,
    1_000_000,
  ),
  headersTimeout: duration(
    "FLEET_HEADERS_TIMEOUT",
    "10s",
    "an HTTP/1.1 request's headers must arrive within this long (a slow client gets 408 and is disconnected)",
  ),
  unaryBodyTimeout: duration(
    "FLEET_UNARY_BODY_TIMEOUT",
    "10s",
    "a unary call's request message must arrive within this long of its headers (DEADLINE_EXCEEDED after)",
  ),
  leaderInterval: duration(
    "FLEET_LEADER_INTERVAL",
    "5s",
    "how often the one runner of a job that must run once (track packing, partitions ahead, archive runs, the staleness sweep) renews its hold and the other instances try to take it: a killed runner is replaced within this (the sweep's Redis lease: within 3x)",
  ),
  // auth
  secret: str("FLEET_JWT_SECRET", DEV_SECRET, "HS256 secret that signs and checks tokens; set your own outside local use"),
  issuer: str("FLEET_JWT_ISSUER", "fleet", "required `iss` of tokens"),
  audience: str("FLEET_JWT_AUDIENCE", "fleet", "required `aud` of tokens"),
  // external services; empty means `fleet up` starts its own
  natsUrl: str("NATS_URL", "", "NATS server with JetStream (empty: `fleet up` starts one)"),
  natsPingInterval: duration(
    "NATS_PING_INTERVAL",
    "2s",
    "how often a service pings its NATS server; two pings unanswered and it moves to another member of the cluster (a stopped or cut-off node is left within about five times this: found stale at the third ping, then one connection attempt to it, bounded by twice this)",
  ),
  redisUrl: str("REDIS_URL", "", "Redis server (empty: `fleet up` starts one)"),
  databaseUrl: str("DATABASE_URL", "", "PostgreSQL connection URL (empty: `fleet up` starts one)"),
  natsMonitorUrl: str(
    "NATS_MONITOR_URL",
    "",
    "monitoring URLs of the nats-servers (http://host:8222), comma-separated: `fleet status` lists each node from them (empty: the nodes the stream's replicas name)",
  ),
  adminUrls: str(
    "FLEET_ADMIN_URLS",
    "",
    "admin URLs of the service instances `fleet status` checks, comma-separated, each name=http://host:port (e.g. gateway-1=http://10.0.0.5:9101)",
  ),
  s3Endpoint: str("S3_ENDPOINT", "", "S3-compatible endpoint URL (empty: `fleet up` starts one; see ARCHIVE_DIR)"),
  s3Bucket: str("S3_BUCKET", "fleet-archive", "bucket of the Parquet archive"),
  s3AccessKeyId: str("S3_ACCESS_KEY_ID", "S3RVER", "S3 access key id"),
  s3SecretAccessKey: str("S3_SECRET_ACCESS_KEY", "S3RVER", "S3 secret access key"),
  s3Region: str("S3_REGION", "us-east-1", "S3 region"),
  archiveDir: str("ARCHIVE_DIR", "", "write the archive to this local folder instead of S3"),
  // stream
  // 4 rather than 16: fewer, fuller JetStream messages. Measured with `bun run bench ingest`:
  // 16 gave 152k points/s and ack p99 97 ms at 16,700/s; 4 gave 216k and 37 ms (same machine, same day).
  partitions: int("FLEET_PARTITIONS", 4, "subjects the positions stream is split into (one vehicle always maps to one)", 1, 1024),
  duplicateWindow: duration(
    "FLEET_DUPLICATE_WINDOW",
    "5m",
    "JetStream duplicate window, also how far back a gateway rebuilds its resume state",
  ),
  streamMaxAge: duration("FLEET_STREAM_MAX_AGE", "7d", "how long JetStream keeps positions"),
  streamMaxBytes: int(
    "FLEET_STREAM_MAX_BYTES",
    10 * 1024 ** 3,
    "largest size of the positions stream on disk; when full, new points are refused (UNAVAILABLE), never old ones dropped",
    1024 * 1024,
  ),
  streamReplicas: int(
    "FLEET_STREAM_REPLICAS",
    1,
    "copies of the positions stream (and its durable consumers) on a NATS cluster: 1 on one server, 3 on a cluster; changing it scales the live stream",
    1,
    5,
  ),
  // gateway
  gatewayPort: int("GATEWAY_PORT", 50051, "gateway port (gRPC, gRPC-Web, Connect, /healthz)", 0, 65535),
  gatewayAdminPort: int(
    "GATEWAY_ADMIN_PORT",
    0,
    'gateway admin port on FLEET_ADMIN_HOST: /metrics and /healthz (0: any free port, logged as "admin listening")',
    0,
    65535,
  ),
  gatewayReusePort: bool(
    "GATEWAY_REUSE_PORT",
    false,
    "listen with SO_REUSEPORT, so that several gateway processes on one host share GATEWAY_PORT (set it on each of them)",
  ),
  gatewayVehiclePort: int(
    "GATEWAY_VEHICLE_PORT",
    -1,
    'a second gateway port for vehicles: IngestService over gRPC only, on a lean HTTP/2 server (lib/h2: less memory and CPU per connection than the main port\'s node:http2); the same auth, limits and codes (-1: off; 0: any free port, logged as "vehicle port listening"); honours GATEWAY_REUSE_PORT and GATEWAY_TLS_CERT',
    -1,
    65535,
  ),
  tlsCert: str("GATEWAY_TLS_CERT", "", "PEM certificate file: serve h2 over TLS instead of cleartext"),
  tlsKey: str("GATEWAY_TLS_KEY", "", "PEM private key file for GATEWAY_TLS_CERT"),
  maxMessageBytes: int("GATEWAY_MAX_MESSAGE_BYTES", 256 * 1024, "largest request message accepted", 1024, 16 * 1024 * 1024),
  maxStreamsPerConnection: int("GATEWAY_MAX_STREAMS_PER_CONNECTION", 1000, "HTTP/2 concurrent streams per connection", 1, 100000),
  idleTimeout: duration("GATEWAY_IDLE_TIMEOUT", "60s", "a stream that sends nothing for this long is ended"),
  batchDelay: duration("GATEWAY_BATCH_DELAY", "2ms", "how long a partition batch waits for more points"),
  batchMaxPoints: int("GATEWAY_BATCH_MAX_POINTS", 1000, "points per JetStream message at most", 1, 100000),
  maxInFlight: int("GATEWAY_MAX_IN_FLIGHT", 50000, "points accepted but not yet durable, across all streams", 1),
  // A vehicle's backlog is judged by its own clock, not by how fast it is sent: see gateway/rate-limit.ts.
  fixRate: num(
    "GATEWAY_MAX_FIX_RATE",
    20,
    "fixes per second of a vehicle's recorded time (or of wall time, when more) past which its points are a flood, refused with RESOURCE_EXHAUSTED (0: no check)",
  ),
  fixBurst: int("GATEWAY_FIX_BURST", 100, "fixes one vehicle may send beyond GATEWAY_MAX_FIX_RATE at once", 1),
  vehicleBytesPerSecond: int(
    "GATEWAY_VEHICLE_BYTES_PER_SECOND",
    4 * 1024 * 1024,
    "bytes of points per second one vehicle is read at; a faster sender is slowed by HTTP/2 flow control, not refused (0: no limit)",
  ),
  vehicleBurstBytes: int("GATEWAY_VEHICLE_BURST_BYTES", 1024 * 1024, "bytes one vehicle may send at once before its reading slows down", 1),
  maxUnsentRejections: int(
    "GATEWAY_MAX_UNSENT_REJECTIONS",
    1000,
    "refused points a stream may hold for its client: past it a Sync stops reading until its client takes the ack, an Upload answers at once",
    1,
  ),
  maxClockSkew: duration("GATEWAY_MAX_CLOCK_SKEW", "30s", "how far in the future recorded_at may be"),
  maxPointAge: duration("GATEWAY_MAX_POINT_AGE", "7d", "how old recorded_at may be"),
  maxSpeed: num("GATEWAY_MAX_SPEED", 100, "plausible speed limit in m/s"),
  drainTimeout: duration("GATEWAY_DRAIN_TIMEOUT", "10s", "on SIGTERM, how long to finish in-flight points"),
  // tracker
  trackerPort: int("TRACKER_PORT", 50052, "tracker port (gRPC, gRPC-Web, Connect, /healthz)", 0, 65535),
  trackerAdminPort: int(
    "TRACKER_ADMIN_PORT",
    0,
    'tracker admin port on FLEET_ADMIN_HOST: /metrics and /healthz (0: any free port, logged as "admin listening")',
    0,
    65535,
  ),
  staleAfter: duration("TRACKER_STALE_AFTER", "5m", "a vehicle not heard from for this long goes offline"),
  sweepInterval: duration("TRACKER_SWEEP_INTERVAL", "10s", "how often the tracker looks for vehicles past TRACKER_STALE_AFTER"),
  redisPrefix: str("TRACKER_REDIS_PREFIX", "fleet:", "prefix of every Redis key the tracker writes"),
  trackerFetch: int("TRACKER_FETCH_BATCHES", 64, "JetStream messages (batches) the tracker pulls at once", 1, 10000),
  maxRadius: num("TRACKER_MAX_RADIUS_M", 200_000, "largest radius (or half-diagonal of a box) of a query or area watch, in metres"),
  nearbyDefault: int("TRACKER_NEARBY_DEFAULT", 50, "vehicles Nearby returns when the request's limit is 0", 1),
  nearbyMax: int("TRACKER_NEARBY_MAX", 1000, "largest limit a Nearby request may ask for", 1),
  watchMaxVehicles: int("TRACKER_WATCH_MAX_VEHICLES", 100, "vehicle ids one WatchVehicles call may name", 1),
  watchMaxPending: int(
    "TRACKER_WATCH_MAX_PENDING",
    10_000,
    "vehicles with an unsent update a watch may hold before it is ended as too slow",
    1,
  ),
  scanMax: int(
    "TRACKER_SCAN_MAX",
    2000,
    "vehicles one Nearby or area snapshot may examine in Redis (bounds each script call to a few ms); past it RESOURCE_EXHAUSTED: narrow the area",
    100,
    100000,
  ),
  watchesPerToken: int(
    "TRACKER_WATCHES_PER_TOKEN",
    50,
    "watches one token may hold open at once in one tracker process; past it RESOURCE_EXHAUSTED",
    1,
  ),
  watchesPerConnection: int(
    "TRACKER_WATCHES_PER_CONNECTION",
    100,
    "watches one client connection (HTTP/2 session, or HTTP/1.1 socket) may hold open at once; past it RESOURCE_EXHAUSTED",
    1,
  ),
  watchMaxLag: duration(
    "TRACKER_WATCH_MAX_LAG",
    "30s",
    "a watch whose client takes nothing for this long while updates wait is ended as too slow",
  ),
  watchHeartbeat: duration(
    "TRACKER_WATCH_HEARTBEAT",
    "10s",
    "a watch with nothing else to send sends a message with no events, so that its messages are never more than this apart and a client can tell a quiet watch from a tracker that stopped answering (0: never; client/live's watches then leave a quiet tracker after their idleTimeoutMs, 35 s)",
  ),
  trackerConsume: bool(
    "TRACKER_CONSUME",
    true,
    "consume the positions stream into Redis; false serves queries and watches only (scale the two apart)",
  ),
  redisPubsub: bool("TRACKER_REDIS_PUBSUB", false, "also PUBLISH every update on a Redis channel per vehicle (the benchmark's comparison)"),
  // history
  historyPort: int("HISTORY_PORT", 50053, "history port (gRPC, gRPC-Web, Connect, /healthz)", 0, 65535),
  historyAdminPort: int(
    "HISTORY_ADMIN_PORT",
    0,
    'history admin port on FLEET_ADMIN_HOST: /metrics and /healthz (0: any free port, logged as "admin listening")',
    0,
    65535,
  ),
  hotRetention: duration("HISTORY_HOT_RETENTION", "7d", "positions older than this move to the Parquet archive"),
  historySchema: str("HISTORY_DB_SCHEMA", "public", "PostgreSQL schema of the history tables (created with them)"),
  historyTimescale: oneOf(
    "HISTORY_TIMESCALE",
    "auto",
    ["auto", "on", "off"],
    "TimescaleDB for positions: auto uses it when installed and preloaded (else plain partitions), on fails at start naming what is missing, off never uses it; a schema keeps the mode it was created with",
  ),
  historyBatchRows: int("HISTORY_BATCH_MAX_ROWS", 20_000, "rows per write transaction at most", 1, 1_000_000),
  historyWriters: int("HISTORY_WRITERS", 2, "write transactions in flight per history process", 1, 64),
  historyBatchDelay: duration(
    "HISTORY_BATCH_DELAY",
    "200ms",
    "how long a write waits for more rows when fewer than HISTORY_BATCH_MAX_ROWS are queued (larger transactions: PostgreSQL's and history's CPU per row fall several-fold; rows become queryable this much later; 0: write at once)",
  ),
  historyWriteTimeout: duration(
    "HISTORY_WRITE_TIMEOUT",
    "30s",
    "a write transaction still unsettled after this is given up: the writer's connections are closed and the batch retried on new ones (history_write_timeouts_total; 0: never)",
  ),
  historyPartitionsAhead: int("HISTORY_PARTITIONS_AHEAD", 2, "day partitions created ahead of today", 0, 365),
  trackPackDelay: duration(
    "HISTORY_TRACK_PACK_DELAY",
    "5m",
    "an hour's track points are packed for GetTrack this long after the hour ended (later points pack it again)",
  ),
  trackPackInterval: duration(
    "HISTORY_TRACK_PACK_INTERVAL",
    "1m",
    "how often history packs the hours that closed (0: never; GetTrack then reads every row)",
  ),
  trackMaxRange: duration("HISTORY_TRACK_MAX_RANGE", "7d", "longest range of GetTrack and GetStats"),
  trackPoints: int("HISTORY_TRACK_POINTS", 1000, "GetTrack point budget when the caller gives none", 2, 1_000_000),
  trackMaxPoints: int("HISTORY_TRACK_MAX_POINTS", 10_000, "largest GetTrack point budget", 2, 1_000_000),
  replayMaxRange: duration("HISTORY_REPLAY_MAX_RANGE", "1d", "longest range of Replay"),
  maxAreaRadius: num("HISTORY_MAX_AREA_RADIUS", 50_000, "largest Replay area radius (or box half-diagonal), metres"),
  historyReadConnections: int(
    "HISTORY_READ_CONNECTIONS",
    4,
    "PostgreSQL connections of history's queries (GetTrack, GetStats, Replay pages); the writer has its own",
    1,
    1000,
  ),
  historyWriteConnections: int(
    "HISTORY_WRITE_CONNECTIONS",
    4,
    "PostgreSQL connections of history's writer (HISTORY_WRITERS transactions, partitions); migrations and track packing have 2 of their own",
    2,
    1000,
  ),
  replaysMax: int("HISTORY_REPLAYS_MAX", 64, "Replay streams open at once per history process", 1, 100_000),
  replaysPerToken: int("HISTORY_REPLAYS_PER_TOKEN", 4, "Replay streams one token may have open at once", 1, 100_000),
  // archiver
  archiverPort: int("ARCHIVER_PORT", 50054, "archiver port (gRPC, gRPC-Web, Connect, /healthz)", 0, 65535),
  archiverAdminPort: int(
    "ARCHIVER_ADMIN_PORT",
    0,
    'archiver admin port on FLEET_ADMIN_HOST: /metrics and /healthz (0: any free port, logged as "admin listening")',
    0,
    65535,
  ),
  archiveInterval: duration("ARCHIVE_INTERVAL", "1h", "how often the archiver runs by itself (0: only when asked)"),
  archivePrefix: str("ARCHIVE_PREFIX", "", "key prefix of the archive inside S3_BUCKET"),
  archiveCacheDir: str("ARCHIVE_CACHE_DIR", "", "local copies of S3 objects for DuckDB (default: <tmp>/fleet-archive-cache)"),
  // live map page of `fleet up`
  webPort: int("WEB_PORT", 50050, "port of the live map page `fleet up` serves (0: a free port)", 0, 65535),
  webMapStyle: str(
    "WEB_MAP_STYLE",
    "",
    "MapLibre style URL the live map draws under the vehicles (a style the operator hosts; empty: a graticule, no tiles)",
  ),
  // demo / simulator
  simVehicles: int("SIM_VEHICLES", 50, "vehicles the simulator drives", 1),
  simInterval: duration("SIM_INTERVAL", "1s", "how often each simulated vehicle reports"),
  simBadFixes: num("SIM_BAD_FIX_RATE", 0.002, "share of simulated fixes that are deliberately bad"),
  simDisconnects: num("SIM_DISCONNECT_RATE", 0.001, "chance per report that a simulated vehicle drops its connection"),
  tlsInsecure: bool("FLEET_TLS_INSECURE", false, "clients skip TLS certificate checks (local testing only)"),
} as const;

type Specs = typeof S;
export type Config = { readonly [K in keyof Specs]: Specs[K] extends Spec<infer T> ? T : never };

/** Parses the environment (by default `process.env`) into a frozen Config; throws ConfigError naming the variable. */
export function loadConfig(env: Env = process.env, overrides: Partial<Config> = {}): Config {
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(S) as [string, Spec<unknown>][]) {
    const raw = env[spec.name];
    out[key] = raw === undefined || raw === "" ? spec.def : spec.parse(raw, spec.name);
  }
  Object.assign(out, overrides);
  const config = out as Config;
  if ((config.tlsCert === "") !== (config.tlsKey === "")) {
    throw new ConfigError("GATEWAY_TLS_CERT", "set GATEWAY_TLS_CERT and GATEWAY_TLS_KEY together");
  }
  return Object.freeze(config);
}

/** True when tokens are signed with the built-in development secret. */
export function usesDevSecret(config: Config): boolean {
  return config.secret === DEV_SECRET;
}

/** One line per variable: name, default, meaning. */
export function configHelp(): string {
  const fmt = (v: unknown) => (v === "" ? "(empty)" : String(v));
  return specs.map((s) => `  ${s.name.padEnd(36)} ${s.help}${s.help.includes("(default") ? "" : ` (default ${fmt(s.def)})`}`).join("\n");
}
