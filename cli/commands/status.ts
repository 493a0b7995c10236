/**
 * `fleet status`: the cluster at a glance, for a person (a table) or a script (`--json`). It only
 * reads: the JetStream API for the stream and its consumers (works against any deployment with
 * NATS_URL alone), the nats-servers' monitoring endpoints for the nodes when they are given, each
 * service instance's admin /healthz and /metrics, and a PING to Redis and PostgreSQL.
 */
import { parseArgs } from "node:util";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import Redis from "ioredis";
import postgres from "postgres";
import { loadConfig, parseDuration } from "../../lib/config";
import { CONSUMERS, POSITIONS_STREAM } from "../../lib/nats/subjects";
import { readUpRecord } from "../up-record";

const help = `usage: fleet status [--json] [--stream NAME] [--timeout 3s]

Shows the platform at a glance and exits 0 when it is healthy, 1 when anything is not (each
problem is named, with what to do), 2 on a wrong option:

  nats       each node (name, version, routes, who leads the JetStream meta group) from
             NATS_MONITOR_URL (the servers' http://host:8222, comma-separated); without it, the
             nodes the stream's replicas name
  stream     FLEET_POSITIONS: replicas, its leader, each replica current or lagging (a stream
             without a leader, or with a replica offline, is unhealthy; a lagging one is a warning)
  consumers  tracker and history: pending (not yet delivered) and ack-pending (delivered, not acked)
  services   each instance of FLEET_ADMIN_URLS (name=http://host:port, comma-separated): its
             /healthz and, from its /metrics, its version and uptime
  redis, postgres
             REDIS_URL and DATABASE_URL answer (a PING, a SELECT)

  --json         one JSON object instead of the table (the same facts; "healthy" and "problems")
  --stream NAME  another stream than FLEET_POSITIONS (tests give each their own)
  --timeout D    how long each check may take (default 3s)

Reads NATS_URL, NATS_MONITOR_URL, FLEET_ADMIN_URLS, REDIS_URL and DATABASE_URL ("fleet env"). Those not
set are taken from .fleet/status.env, which a running "fleet up" writes (its servers and every instance).`;

type State = "ok" | "warn" | "fail";

export interface NodeStatus {
  name: string;
  state: State;
  version?: string;
  routes?: number;
  role: string;
  detail?: string;
}
export interface ReplicaStatus {
  name: string;
  leader: boolean;
  state: State;
  current: boolean;
  offline: boolean;
  lag: number;
}
export interface StreamStatus {
  name: string;
  state: State;
  replicas: number;
  leader: string | null;
  messages: number;
  bytes: number;
  peers: ReplicaStatus[];
  detail?: string;
}
export interface ConsumerStatus {
  name: string;
  state: State;
  pending?: number;
  ackPending?: number;
  leader?: string | null;
  detail?: string;
}
export interface ServiceStatus {
  name: string;
  url: string;
  state: State;
  service?: string;
  version?: string;
  uptimeSeconds?: number;
  detail?: string;
}
export interface StoreStatus {
  name: "redis" | "postgres";
  state: State;
  detail: string;
}
export interface StatusReport {
  healthy: boolean;
  nodes: NodeStatus[];
  stream: StreamStatus | null;
  consumers: ConsumerStatus[];
  services: ServiceStatus[];
  stores: StoreStatus[];
  /** Every fail and warning, one line each, naming the part and what to do. */
  problems: string[];
}

export interface StatusOptions {
  natsUrl: string;
  natsMonitorUrls?: string[];
  /** Service instances: name and admin URL. */
  admin?: { name: string; url: string }[];
  redisUrl: string;
  databaseUrl: string;
  stream?: string;
  timeoutMs?: number;
}

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));
const list = (raw: string) =>
  raw
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);

async function getJson<T>(url: string, timeoutMs: number): Promise<T> {
  const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!r.ok) throw new Error(`${url} answered ${r.status}`);
  return (await r.json()) as T;
}

/** The given servers' own view: /varz for name and version, /routez for routes, /jsz for the meta leader. */
async function nodesFromMonitors(urls: string[], timeoutMs: number): Promise<NodeStatus[]> {
  return Promise.all(
    urls.map(async (base): Promise<NodeStatus> => {
      const root = base.replace(/\/+$/, "");
      try {
        const [varz, routez, jsz] = await Promise.all([
          getJson<{ server_name: string; version: string; jetstream?: { config?: unknown } }>(`${root}/varz`, timeoutMs),
          getJson<{ num_routes: number }>(`${root}/routez`, timeoutMs),
          getJson<{ disabled?: boolean; meta_cluster?: { leader?: string } }>(`${root}/jsz`, timeoutMs),
        ]);
        const roles = [jsz.disabled || !varz.jetstream?.config ? "JetStream off" : "JetStream"];
        if (jsz.meta_cluster?.leader === varz.server_name) roles.push("meta leader");
        return {
          name: varz.server_name,
          state: jsz.disabled ? "fail" : "ok",
          version: varz.version,
          routes: routez.num_routes,
          role: roles.join(", "),
          detail: jsz.disabled ? "JetStream is disabled on this server: start it with JetStream (-js)" : undefined,
        };
      } catch (err) {
        return {
          name: root,
          state: "fail",
          role: "-",
          detail: `monitoring endpoint unreachable (${message(err)}): is this nats-server running?`,
        };
      }
    }),
  );
}

/** Seconds without a word from a replica after which it counts as offline (its server down or cut off). */
const SILENT_PEER_S = 5;

async function streamStatus(jsm: JetStreamManager, name: string, connectedTo: string): Promise<StreamStatus> {
  let info: Awaited<ReturnType<JetStreamManager["streams"]["info"]>>;
  try {
    info = await jsm.streams.info(name);
  } catch (err) {
    const missing = /not found/i.test(message(err));
    return {
      name,
      state: "fail",
      replicas: 0,
      leader: null,
      messages: 0,
      bytes: 0,
      peers: [],
      detail: missing ? "stream not found: start a gateway, which creates it" : `stream info failed: ${message(err)}`,
    };
  }
  // A server outside a cluster reports no cluster block: it is the stream's only copy and leader.
  const cluster = info.cluster;
  const leader = cluster ? (cluster.leader ?? null) : connectedTo;
  const peers: ReplicaStatus[] = [];
  if (leader) peers.push({ name: leader, leader: true, state: "ok", current: true, offline: false, lag: 0 });
  for (const r of cluster?.replicas ?? []) {
    // nats-server 2.9 never sets `offline` for a killed peer and keeps it `current` for ~10 s; the
    // leader hears from a live one many times a second, so silence (`active`, in ns) says it first.
    const offline = r.offline === true || (r.active ?? 0) / 1e9 > SILENT_PEER_S;
    peers.push({
      name: r.name,
      leader: false,
      state: offline ? "fail" : r.current ? "ok" : "warn",
      current: r.current,
      offline,
      lag: r.lag ?? 0,
    });
  }
  const offline = peers.filter((p) => p.offline).map((p) => p.name);
  const lagging = peers.filter((p) => p.state === "warn").map((p) => `${p.name} (${p.lag} behind)`);
  let state: State = "ok";
  let detail: string | undefined;
  if (!leader) {
    state = "fail";
    detail = "no leader: fewer than a quorum of its replicas are up; publishes fail until one is elected (start the stopped nats-servers)";
  } else if (offline.length) {
    state = "fail";
    detail = `replica offline on ${offline.join(", ")} (not heard from for over ${SILENT_PEER_S} s): restart that nats-server; the stream goes on while a majority of its replicas is up`;
  } else if (lagging.length) {
    state = "warn";
    detail = `replica lagging on ${lagging.join(", ")}: it catches up by itself; alert if it stays behind`;
  }
  return {
    name,
    state,
    replicas: info.config.num_replicas,
    leader,
    messages: info.state.messages,
    bytes: info.state.bytes,
    peers,
    detail,
  };
}

async function consumerStatus(jsm: JetStreamManager, stream: string): Promise<ConsumerStatus[]> {
  return Promise.all(
    Object.values(CONSUMERS).map(async (name): Promise<ConsumerStatus> => {
      try {
        const ci = await jsm.consumers.info(stream, name);
        return { name, state: "ok", pending: ci.num_pending, ackPending: ci.num_ack_pending, leader: ci.cluster?.leader ?? null };
      } catch (err) {
        if (/not found/i.test(message(err))) {
          return { name, state: "warn", detail: `not created yet: no ${name} has started against this stream` };
        }
        return { name, state: "fail", detail: `consumer info failed: ${message(err)}` };
      }
    }),
  );
}

/** A label's value of the first sample of `metric` in Prometheus text, and the sample's value. */
function sample(text: string, metric: string): { labels: Record<string, string>; value: number } | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${metric}{`) || l.startsWith(`${metric} `));
  if (!line) return undefined;
  const labels: Record<string, string> = {};
  for (const m of line.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]!] = m[2]!;
  return { labels, value: Number(line.slice(line.lastIndexOf(" ") + 1)) };
}

async function serviceStatus({ name, url }: { name: string; url: string }, timeoutMs: number): Promise<ServiceStatus> {
  const root = url.replace(/\/+$/, "");
  try {
    const health = await fetch(`${root}/healthz`, { signal: AbortSignal.timeout(timeoutMs) });
    await health.text();
    const metrics = await fetch(`${root}/metrics`, { signal: AbortSignal.timeout(timeoutMs) });
    const text = metrics.ok ? await metrics.text() : "";
    const build = sample(text, "fleet_build_info");
    const started = sample(text, "process_start_time_seconds");
    return {
      name,
      url,
      state: health.ok ? "ok" : "fail",
      service: build?.labels.service,
      version: build?.labels.version,
      uptimeSeconds: started ? Math.max(0, Math.round(Date.now() / 1000 - started.value)) : undefined,
      detail: health.ok ? undefined : `/healthz answered ${health.status}: its NATS or Redis connection is down, see its log`,
    };
  } catch (err) {
    return { name, url, state: "fail", detail: `admin address unreachable (${message(err)}): is the process running?` };
  }
}

async function redisStatus(url: string, timeoutMs: number): Promise<StoreStatus> {
  if (!url) return { name: "redis", state: "warn", detail: "not checked: REDIS_URL is not set" };
  const redis = new Redis(url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  redis.on("error", () => {}); // the awaited calls below report it
  try {
    await redis.connect();
    await redis.ping();
    const info = await redis.info("memory");
    const used = /used_memory_human:(\S+)/.exec(info)?.[1] ?? "?";
    const max = Number(/maxmemory:(\d+)/.exec(info)?.[1] ?? 0);
    return { name: "redis", state: "ok", detail: `answers; ${used} used${max ? ` of maxmemory ${max} bytes` : ""}` };
  } catch (err) {
    return { name: "redis", state: "fail", detail: `unreachable at ${redactUrl(url)} (${message(err)}): start it or fix REDIS_URL` };
  } finally {
    redis.disconnect();
  }
}

async function postgresStatus(url: string, timeoutMs: number): Promise<StoreStatus> {
  if (!url) return { name: "postgres", state: "warn", detail: "not checked: DATABASE_URL is not set" };
  const sql = postgres(url, { max: 1, connect_timeout: Math.max(1, Math.ceil(timeoutMs / 1000)), onnotice: () => {}, idle_timeout: 1 });
  try {
    const [row] = await sql<{ version: string; replica: boolean }[]>`
      select current_setting('server_version') as version, pg_is_in_recovery() as replica`;
    return { name: "postgres", state: "ok", detail: `answers; PostgreSQL ${row!.version}, ${row!.replica ? "a read replica" : "primary"}` };
  } catch (err) {
    return { name: "postgres", state: "fail", detail: `unreachable at ${redactUrl(url)} (${message(err)}): start it or fix DATABASE_URL` };
  } finally {
    await sql.end({ timeout: 1 }).catch(() => {});
  }
}

/** A URL without its password, for messages. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return url;
  }
}

/** Collects every check at once; never throws: a failed check is a row in the report. */
export async function collectStatus({
  natsUrl,
  natsMonitorUrls = [],
  admin = [],
  redisUrl,
  databaseUrl,
  stream: name = POSITIONS_STREAM,
  timeoutMs = 3000,
}: StatusOptions): Promise<StatusReport> {
  const natsPart = async (): Promise<Pick<StatusReport, "nodes" | "stream" | "consumers">> => {
    const monitored = natsMonitorUrls.length ? await nodesFromMonitors(natsMonitorUrls, timeoutMs) : [];
    if (!natsUrl) {
      const missing: NodeStatus = {
        name: "nats",
        state: "fail",
        role: "-",
        detail: "NATS_URL is not set: give the cluster's URLs, comma-separated",
      };
      return { nodes: [...monitored, missing], stream: null, consumers: [] };
    }
    let nc: NatsConnection;
    try {
      nc = await connect({ servers: list(natsUrl), timeout: timeoutMs, reconnect: false, name: "fleet-status" });
    } catch (err) {
      const down: NodeStatus = {
        name: redactUrl(natsUrl),
        state: "fail",
        role: "-",
        detail: `no server of NATS_URL answers (${message(err)}): start nats-server or fix NATS_URL`,
      };
      return { nodes: [...monitored, down], stream: null, consumers: [] };
    }
    try {
      const jsm = await jetstreamManager(nc, { timeout: timeoutMs });
      const connectedTo = nc.info?.server_name ?? "nats";
      const s = await streamStatus(jsm, name, connectedTo);
      const consumers = s.state === "fail" && s.replicas === 0 ? [] : await consumerStatus(jsm, name);
      // Without monitoring endpoints, the nodes are what the stream's replicas say of themselves.
      const nodes: NodeStatus[] = monitored.length
        ? monitored
        : s.peers.length
          ? s.peers.map((p) => ({
              name: p.name,
              state: p.state,
              role: p.leader
                ? "stream leader"
                : p.offline
                  ? "replica offline"
                  : p.current
                    ? "replica, current"
                    : `replica, ${p.lag} behind`,
              version: p.name === connectedTo ? nc.info?.version : undefined,
            }))
          : [{ name: connectedTo, state: "ok", version: nc.info?.version, role: "connected" }];
      for (const n of nodes) {
        if (s.leader === n.name && !n.role.includes("stream leader")) n.role = `stream leader, ${n.role}`;
      }
      return { nodes, stream: s, consumers };
    } catch (err) {
      // The JetStream API goes quiet while a cluster elects a new meta leader after losing one.
      const stream: StreamStatus = {
        name,
        state: "fail",
        replicas: 0,
        leader: null,
        messages: 0,
        bytes: 0,
        peers: [],
        detail: `the JetStream API did not answer (${message(err)}): a cluster electing a leader after losing a node is back within seconds, run again; otherwise fewer than a majority of its servers are up`,
      };
      return { nodes: monitored, stream, consumers: [] };
    } finally {
      await nc.close().catch(() => {});
    }
  };
  const [nats, services, redis, pg] = await Promise.all([
    natsPart(),
    Promise.all(admin.map((a) => serviceStatus(a, timeoutMs))),
    redisStatus(redisUrl, timeoutMs),
    postgresStatus(databaseUrl, timeoutMs),
  ]);
  const stores = [redis, pg];
  const problems: string[] = [];
  const note = (state: State, what: string, detail?: string) => {
    if (state !== "ok") problems.push(`${state === "fail" ? "FAIL" : "warn"} ${what}: ${detail ?? state}`);
  };
  for (const n of nats.nodes) note(n.state, `nats node ${n.name}`, n.detail);
  if (nats.stream) note(nats.stream.state, `stream ${nats.stream.name}`, nats.stream.detail);
  for (const c of nats.consumers) note(c.state, `consumer ${c.name}`, c.detail);
  for (const s of services) note(s.state, `service ${s.name}`, s.detail);
  for (const s of stores) note(s.state, s.name, s.detail);
  const healthy = [...nats.nodes, ...(nats.stream ? [nats.stream] : []), ...nats.consumers, ...services, ...stores].every(
    (x) => x.state !== "fail",
  );
  return { healthy, ...nats, services, stores, problems };
}

function table(header: string[], rows: (string | number | undefined)[][]): string {
  const cells = [header, ...rows.map((r) => r.map((c) => (c === undefined ? "-" : String(c))))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  return cells.map((r) => `  ${r.map((c, i) => c.padEnd(widths[i]!)).join("  ")}`.trimEnd()).join("\n");
}

const mark = (s: State) => (s === "ok" ? "ok" : s === "warn" ? "WARN" : "FAIL");

function duration(seconds: number | undefined): string | undefined {
  if (seconds === undefined) return undefined;
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  return `${Math.round(seconds / 3600)}h`;
}

/** The report as a table for a person. */
export function formatStatus(r: StatusReport): string {
  const out: string[] = [
    `fleet status: ${r.healthy ? "healthy" : "UNHEALTHY"}${r.problems.length ? ` (${r.problems.length} to look at)` : ""}`,
  ];
  out.push(
    "",
    "nats nodes",
    table(
      ["node", "state", "version", "routes", "role"],
      r.nodes.map((n) => [n.name, mark(n.state), n.version, n.routes, n.role]),
    ),
  );
  if (r.stream) {
    const s = r.stream;
    if (s.replicas === 0) out.push("", `stream ${s.name}: ${mark(s.state)}`);
    else
      out.push(
        "",
        `stream ${s.name}: ${mark(s.state)}, R${s.replicas}, leader ${s.leader ?? "NONE"}, ${s.messages} messages, ${s.bytes} bytes`,
        table(
          ["replica", "state", "role"],
          s.peers.map((p) => [
            p.name,
            mark(p.state),
            p.leader ? "leader" : p.offline ? "offline" : p.current ? "current" : `lagging (${p.lag} behind)`,
          ]),
        ),
      );
  }
  if (r.consumers.length)
    out.push(
      "",
      "consumers",
      table(
        ["consumer", "state", "pending", "ack-pending", "leader"],
        r.consumers.map((c) => [c.name, mark(c.state), c.pending, c.ackPending, c.leader ?? undefined]),
      ),
    );
  out.push(
    "",
    "services",
    r.services.length
      ? table(
          ["instance", "state", "service", "version", "up", "admin"],
          r.services.map((s) => [s.name, mark(s.state), s.service, s.version, duration(s.uptimeSeconds), s.url]),
        )
      : "  none given (set FLEET_ADMIN_URLS: name=http://host:port, comma-separated)",
  );
  out.push(
    "",
    "stores",
    table(
      ["store", "state", "detail"],
      r.stores.map((s) => [s.name, mark(s.state), s.detail]),
    ),
  );
  if (r.problems.length) out.push("", "problems", ...r.problems.map((p) => `  ${p}`));
  return out.join("\n");
}

/** `name=url` pairs; a bare URL is named by its host and port. */
export function parseAdminUrls(raw: string): { name: string; url: string }[] {
  return list(raw).map((item) => {
    const eq = item.indexOf("=");
    if (eq > 0) return { name: item.slice(0, eq), url: item.slice(eq + 1) };
    return { name: item.replace(/^https?:\/\//, ""), url: item };
  });
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      help: { type: "boolean", short: "h" },
      json: { type: "boolean" },
      stream: { type: "string" },
      timeout: { type: "string" },
    },
  });
  if (values.help) {
    console.log(help);
    return 0;
  }
  const config = loadConfig();
  // A variable set wins; what is not set comes from a running `fleet up`.
  const up = readUpRecord();
  if (up) console.error(`fleet status: variables not set are taken from .fleet/status.env (fleet up, pid ${up.pid})`);
  const pick = (set: string, name: keyof NonNullable<typeof up>["values"]) => set || up?.values[name] || "";
  const report = await collectStatus({
    natsUrl: pick(config.natsUrl, "NATS_URL"),
    natsMonitorUrls: list(pick(config.natsMonitorUrl, "NATS_MONITOR_URL")),
    admin: parseAdminUrls(pick(config.adminUrls, "FLEET_ADMIN_URLS")),
    redisUrl: pick(config.redisUrl, "REDIS_URL"),
    databaseUrl: pick(config.databaseUrl, "DATABASE_URL"),
    stream: values.stream,
    timeoutMs: values.timeout ? parseDuration(values.timeout, "--timeout") : undefined,
  });
  console.log(values.json ? JSON.stringify(report) : formatStatus(report));
  return report.healthy ? 0 : 1;
}
