/**
 * `bun run bench ingest`: the gateway's ingest figures and the ceilings they are judged against,
 * in one run, everything co-located on this machine (loopback only):
 *
 * 1. JetStream ceiling: one client publishes one message per point (message id, window 4096)
 *    into a file-storage stream shaped like the gateway's.
 * 2. Mosquitto ceiling: MQTT QoS 1, one point per message, over 1..16 connections; best kept.
 * 3. Gateway (`bun gateway/main.ts` as a child): idle RSS; 10,000+ Sync streams opened from
 *    load-generator children (RSS per stream); a steady 16,700 points/s (ack latency p50/p99);
 *    then as fast as it acks (points/s).
 *
 * Progress lines and a table go to stdout; the LAST line is one JSON object (see `IngestFigures`).
 */
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { Subprocess } from "bun";
import { startStack, startServiceProcess, type Stack, type ServiceProcess } from "../dev";
import { measureJetStreamCeiling } from "./jetstream-ceiling";
import { measureMqtt, startMosquitto, type Mosquitto } from "./mosquitto";
import { createHistogram } from "./histogram";
import { bucketBound, fetchMetrics, histogramBetween, loopDelayLine } from "./prom-histogram";
import { cpuMeter, rssBytes } from "./proc";
import { summarizeProfile } from "./profile-summary";
import type { TimerGaps, WorkerCommand, WorkerCounters, WorkerEvent } from "./ingest-protocol";
import { positiveOption } from "./options";

/** The JSON line printed last. */
export interface IngestFigures {
  gateway_points_per_s: number;
  ack_p50_ms: number;
  ack_p99_ms: number;
  jetstream_ceiling_points_per_s: number;
  mosquitto_qos1_points_per_s: number;
  gateway_bytes_per_stream: number;
}

const TARGETS = {
  gatewayPointsPerS: 100_000,
  ackP99Ms: 10,
  bytesPerStream: 10 * 1024,
};

const root = join(import.meta.dir, "..");

export const INGEST_HELP = `bun run bench ingest [options]

Measures the gateway against JetStream and Mosquitto ceilings in one run (~3-4 minutes).
Prints progress, a table, and last one JSON line with gateway_points_per_s, ack_p50_ms,
ack_p99_ms, jetstream_ceiling_points_per_s, mosquitto_qos1_points_per_s, gateway_bytes_per_stream.

Options:
  --streams N           vehicle streams held open (default 10000)
  --connections N       HTTP/2 connections in all (default 12; at least streams/1000, the
                        gateway's GATEWAY_MAX_STREAMS_PER_CONNECTION default)
  --workers N           load generator processes (default 2)
  --rate N              steady offered load for the latency phase, points/s (default 16700)
  --steady-seconds N    latency phase length after a 3 s warm-up (default 15)
  --blast-seconds N     throughput phase length after a 3 s warm-up (default 15)
  --window N            unacked points per stream in the throughput phase (default 8)
  --mqtt-connections L  comma list of MQTT connection counts to try (default 1,4,8,16)
  --ceiling-seconds N   length of each ceiling measurement (default 8 JetStream, 5 per MQTT count)
  --rate-limit N        GATEWAY_MAX_FIX_RATE for the gateway: fixes per recorded second of one vehicle (default 0:
                        no flood check, since the throughput phase sends each vehicle faster than a receiver)
  --quick               smoke run: 2000 streams, short phases (figures not comparable)
  --skip-ceilings       only the gateway phases
  --gateway-env K=V     extra environment for the gateway (repeatable)
  --profile             run the gateway under \`bun --cpu-prof\` and print where its time went
                        (profiling slows it: figures of such a run are not comparable)
  --service DIR         folder whose main.ts is measured instead of gateway/ (default gateway)
`;

interface Options {
  streams: number;
  connections: number;
  workers: number;
  rate: number;
  steadyMs: number;
  blastMs: number;
  window: number;
  mqttConnections: number[];
  jsMs: number;
  mqttMs: number;
  rateLimit: string | undefined;
  skipCeilings: boolean;
  gatewayEnv: Record<string, string>;
  service: string;
  profile: boolean;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      streams: { type: "string" },
      connections: { type: "string" },
      workers: { type: "string" },
      rate: { type: "string" },
      "steady-seconds": { type: "string" },
      "blast-seconds": { type: "string" },
      window: { type: "string" },
      "mqtt-connections": { type: "string" },
      "ceiling-seconds": { type: "string" },
      "rate-limit": { type: "string" },
      quick: { type: "boolean" },
      "skip-ceilings": { type: "boolean" },
      "gateway-env": { type: "string", multiple: true },
      service: { type: "string" },
      profile: { type: "boolean" },
    },
    strict: true,
  });
  const quick = values.quick === true;
  const int = positiveOption;
  const streams = int("streams", values.streams, quick ? 2000 : 10_000);
  const ceiling = values["ceiling-seconds"] === undefined ? undefined : int("ceiling-seconds", values["ceiling-seconds"], 5);
  const gatewayEnv: Record<string, string> = {};
  for (const kv of values["gateway-env"] ?? []) {
    const i = kv.indexOf("=");
    if (i <= 0) throw new Error(`--gateway-env: expected KEY=VALUE, got "${kv}"`);
    gatewayEnv[kv.slice(0, i)] = kv.slice(i + 1);
  }
  const maxPerConnection = Number(gatewayEnv.GATEWAY_MAX_STREAMS_PER_CONNECTION ?? 1000);
  const workers = int("workers", values.workers, 2);
  let connections = int("connections", values.connections, 12);
  // Stay under the gateway's per-connection stream limit, with a margin.
  connections = Math.max(connections, Math.ceil(streams / (maxPerConnection * 0.95)), workers);
  return {
    streams,
    connections,
    workers,
    rate: int("rate", values.rate, 16_700),
    steadyMs: int("steady-seconds", values["steady-seconds"], quick ? 4 : 15) * 1000,
    blastMs: int("blast-seconds", values["blast-seconds"], quick ? 4 : 15) * 1000,
    window: int("window", values.window, 8),
    mqttConnections: (values["mqtt-connections"] ?? (quick ? "1,8" : "1,4,8,16")).split(",").map((s) => int("mqtt-connections", s, 1)),
    jsMs: (ceiling ?? (quick ? 3 : 8)) * 1000,
    mqttMs: (ceiling ?? (quick ? 2 : 5)) * 1000,
    rateLimit: values["rate-limit"],
    skipCeilings: values["skip-ceilings"] === true,
    gatewayEnv,
    service: values.service ?? "gateway",
    profile: values.profile === true,
  };
}

const fmt = (n: number, digits = 0) =>
  Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }) : "n/a";
const say = (line: string) => process.stdout.write(`${line}\n`);

/** One load generator child and the events it sends. */
export interface Worker {
  proc: Subprocess;
  send(cmd: WorkerCommand): void;
  next<T extends WorkerEvent["type"]>(type: T, timeoutMs: number): Promise<Extract<WorkerEvent, { type: T }>>;
  latest: WorkerCounters;
}

/** One load generator's late turns of its send timer (a stalled generator reads its acks late too). */
const loadGapLine = (g: TimerGaps) =>
  `send timer late > 5 ms ${g.over5} times, > 10 ms ${g.over10}, > 20 ms ${g.over20}, longest gap ${fmt(g.maxMs, 1)} ms`;

export function spawnWorker(): Worker {
  const waiting = new Map<string, { resolve: (e: WorkerEvent) => void; reject: (e: Error) => void }>();
  const queued: WorkerEvent[] = [];
  let failure: Error | null = null;
  const worker: Worker = {
    latest: { sent: 0, acked: 0, rejected: 0, streamErrors: 0, open: 0 },
    proc: Bun.spawn([process.execPath, join(import.meta.dir, "ingest-worker.ts")], {
      cwd: root,
      stdio: ["ignore", "inherit", "inherit"],
      serialization: "json",
      ipc(message) {
        const event = message as WorkerEvent;
        if (event.type === "progress") {
          worker.latest = event.counters;
          return;
        }
        if ("counters" in event) worker.latest = event.counters;
        if (event.type === "failed") {
          failure = new Error(`load generator failed: ${event.message}`);
          for (const w of waiting.values()) w.reject(failure);
          waiting.clear();
          return;
        }
        const w = waiting.get(event.type);
        if (w) {
          waiting.delete(event.type);
          w.resolve(event);
        } else queued.push(event);
      },
    }),
    send(cmd) {
      worker.proc.send(cmd);
    },
    next(type, timeoutMs) {
      if (failure) return Promise.reject(failure);
      const i = queued.findIndex((e) => e.type === type);
      if (i >= 0) return Promise.resolve(queued.splice(i, 1)[0] as never);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiting.delete(type);
          reject(new Error(`load generator: no "${type}" within ${timeoutMs} ms`));
        }, timeoutMs);
        waiting.set(type, {
          resolve: (e) => {
            clearTimeout(timer);
            resolve(e as never);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        });
      });
    },
  };
  worker.proc.exited.then((code) => {
    if (code !== 0 && !failure) {
      failure = new Error(`load generator exited with ${code}`);
      for (const w of waiting.values()) w.reject(failure);
      waiting.clear();
    }
  });
  return worker;
}

export const sum = (ws: Worker[], key: keyof WorkerCounters) => ws.reduce((s, w) => s + w.latest[key], 0);

/** Prints one progress line a second while `run` is pending. */
export async function withTicker<T>(label: string, workers: Worker[], run: Promise<T>): Promise<T> {
  let lastAcked = sum(workers, "acked");
  let last = performance.now();
  const timer = setInterval(() => {
    const t = performance.now();
    const acked = sum(workers, "acked");
    say(
      `  ${label}: ${fmt(((acked - lastAcked) * 1000) / (t - last))} acked/s, open ${fmt(sum(workers, "open"))}, ` +
        `rejected ${fmt(sum(workers, "rejected"))}, stream errors ${fmt(sum(workers, "streamErrors"))}`,
    );
    lastAcked = acked;
    last = t;
  }, 1000);
  try {
    return await run;
  } finally {
    clearInterval(timer);
  }
}

const reasonNames: Record<number, string> = {
  1: "invalid coordinates",
  2: "time in future",
  3: "time too old",
  4: "duplicate",
  5: "implausible speed",
  6: "invalid field",
  7: "wrong vehicle",
};

/** Runs the whole ingest bench; returns the figures it printed last. */
export async function runIngestBench(argv: string[]): Promise<IngestFigures> {
  const o = parseOptions(argv);
  const started = performance.now();
  const elapsed = () => `${((performance.now() - started) / 1000).toFixed(0)}s`;
  const cleanups: (() => Promise<unknown>)[] = [];
  const figures: IngestFigures = {
    gateway_points_per_s: NaN,
    ack_p50_ms: NaN,
    ack_p99_ms: NaN,
    jetstream_ceiling_points_per_s: NaN,
    mosquitto_qos1_points_per_s: NaN,
    gateway_bytes_per_stream: NaN,
  };
  const notes: string[] = [];
  const mqttRuns: { connections: number; pointsPerSecond: number }[] = [];
  const cpu: Record<string, Record<string, number>> = {};
  const waited: Record<string, Record<string, number>> = {};
  const extra = {
    idleRss: 0,
    openRss: 0,
    openMs: 0,
    steadyAcked: 0,
    steadySent: 0,
    steadySeconds: 0,
    latencyCount: 0,
    p999: NaN,
    max: NaN,
    blastAcked: 0,
    jsBytes: 0,
  };

  const onSignal = () => {
    say("interrupted: stopping what the bench started");
    void Promise.allSettled(cleanups.reverse().map((c) => c())).then(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  try {
    say(
      `bench ingest: ${o.streams} streams on ${o.connections} HTTP/2 connections from ${o.workers} load processes; 2 cores shared by everything`,
    );
    say(`[${elapsed()}] starting nats-server (stack helper)`);
    const stack: Stack = await startStack({ services: ["nats"] });
    cleanups.push(() => stack.stop());
    const natsPid = stack.pid("nats");

    if (!o.skipCeilings) {
      say(
        `[${elapsed()}] JetStream ceiling: one client, one message per point with a message id, window 4096, file storage, ${o.jsMs / 1000} s`,
      );
      const meter = cpuMeter({ nats: natsPid, bench: process.pid }, { rest: true });
      const js = await measureJetStreamCeiling({ natsUrl: stack.natsUrl, durationMs: o.jsMs, vehicles: o.streams, progress: say });
      cpu.jetstream = meter.stop();
      figures.jetstream_ceiling_points_per_s = js.pointsPerSecond;
      extra.jsBytes = js.bytesPerPoint;
      say(`  => ${fmt(js.pointsPerSecond)} points/s (${fmt(js.bytesPerPoint, 1)} B per point)`);

      say(
        `[${elapsed()}] Mosquitto ceiling: QoS 1, one point per message, ${o.mqttConnections.join("/")} connections, ${o.mqttMs / 1000} s each`,
      );
      const mosquitto: Mosquitto = await startMosquitto();
      cleanups.push(() => mosquitto.stop());
      say(`  mosquitto ${mosquitto.url} (pid ${mosquitto.pid})`);
      for (const connections of o.mqttConnections) {
        const window = Math.max(64, Math.floor(4096 / connections));
        const meter = cpuMeter({ mosquitto: mosquitto.pid });
        const r = await measureMqtt({
          url: mosquitto.url,
          connections,
          window,
          vehicles: o.streams,
          warmupMs: 1000,
          durationMs: o.mqttMs,
          processes: o.workers,
        });
        cpu[`mqtt-${connections}`] = meter.stop();
        mqttRuns.push({ connections, pointsPerSecond: r.pointsPerSecond });
        say(
          `  ${connections} connection(s), window ${window} each: ${fmt(r.pointsPerSecond)} points/s${r.failed ? ` (${r.failed} failed)` : ""}`,
        );
      }
      await mosquitto.stop();
      cleanups.pop();
      figures.mosquitto_qos1_points_per_s = Math.max(...mqttRuns.map((r) => r.pointsPerSecond));
    }

    const secret = randomBytes(24).toString("base64url");
    const keys = { secret, issuer: "fleet", audience: "fleet" };
    const gatewayEnv: Record<string, string> = {
      ...stack.env(),
      GATEWAY_PORT: "0",
      FLEET_JWT_SECRET: secret,
      FLEET_JWT_ISSUER: keys.issuer,
      FLEET_JWT_AUDIENCE: keys.audience,
      // The "listening" line is info; per-RPC lines are debug, so info keeps the log quiet under load.
      LOG_LEVEL: "info",
      // The throughput phase sends each vehicle far faster than a GPS receiver makes fixes (the flood
      // check would refuse it): measured without the check unless --rate-limit asks for one.
      GATEWAY_MAX_FIX_RATE: o.rateLimit ?? "0",
      ...o.gatewayEnv,
    };
    const profileDir = join(root, ".fleet", "profiles", `bench-${Date.now().toString(36)}`);
    if (o.profile) {
      mkdirSync(profileDir, { recursive: true });
      gatewayEnv.BUN_OPTIONS = `--cpu-prof --cpu-prof-dir=${profileDir}`;
      notes.push(`gateway ran under --cpu-prof (slower than without): profile in ${profileDir}`);
    }
    const service = o.service;
    if (!existsSync(join(root, service, "main.ts"))) throw new Error(`${service}/main.ts not found`);
    if (service !== "gateway") notes.push(`measured ${service}/main.ts, NOT the gateway`);
    const changed = Object.entries(gatewayEnv).filter(
      ([k]) => !k.startsWith("NATS") && !k.startsWith("FLEET_JWT") && k !== "GATEWAY_PORT" && k !== "LOG_LEVEL" && k !== "BUN_OPTIONS",
    );
    notes.push(
      changed.length > 0
        ? `gateway env set by the bench: ${changed.map(([k, v]) => `${k}=${v}`).join(" ")} (everything else default)`
        : "gateway settings: all defaults (only NATS_URL, GATEWAY_PORT=0 and a fresh FLEET_JWT_SECRET set by the bench)",
    );
    mkdirSync(join(root, ".fleet", "logs"), { recursive: true });
    const logFile = join(root, ".fleet", "logs", "bench-gateway.log");
    say(`[${elapsed()}] starting ${service} (log: ${logFile})`);
    const gateway: ServiceProcess = await startServiceProcess({ service, env: gatewayEnv, logFile });
    cleanups.push(() => gateway.stop("SIGTERM", 5000));
    say(`  ${gateway.url} (pid ${gateway.pid})`);
    await Bun.sleep(1500);
    extra.idleRss = rssBytes(gateway.pid);
    say(`  idle RSS ${fmt(extra.idleRss / 1048576, 1)} MiB`);

    const workers = Array.from({ length: o.workers }, () => spawnWorker());
    cleanups.push(async () => {
      for (const w of workers) w.proc.kill();
    });
    await Promise.all(workers.map((w) => w.next("hello", 10_000)));
    const prefix = `bench-${Date.now().toString(36)}`;
    const per = Math.ceil(o.streams / o.workers);
    const connPer = Math.ceil(o.connections / o.workers);
    workers.forEach((w, i) => {
      w.send({
        type: "init",
        url: gateway.url,
        keys,
        connections: connPer,
        prefix,
        first: i * per,
        count: Math.min(per, o.streams - i * per),
      });
    });
    await Promise.all(workers.map((w) => w.next("ready", 60_000)));

    say(`[${elapsed()}] opening ${o.streams} Sync streams (each waits for its first ack)`);
    const openStart = performance.now();
    for (const w of workers) w.send({ type: "open", batch: 500, timeoutMs: 120_000 });
    const opened = await withTicker("open", workers, Promise.all(workers.map((w) => w.next("opened", 130_000))));
    extra.openMs = performance.now() - openStart;
    const openCount = opened.reduce((s, e) => s + e.open, 0);
    const failed = opened.reduce((s, e) => s + e.failed, 0);
    say(
      `  ${fmt(openCount)} open, ${fmt(failed)} failed in ${fmt(extra.openMs / 1000, 1)} s${failed ? ` (last error: ${opened.map((e) => e.lastError).join(" ")})` : ""}`,
    );
    const workerPids = Object.fromEntries(workers.map((w, i) => [`load${i + 1}`, w.proc.pid]));
    const pids = { gateway: gateway.pid, nats: natsPid, ...workerPids, bench: process.pid };
    // CPU with every stream open and no points: what holding streams costs by itself.
    const holdMeter = cpuMeter(pids, { rest: true });
    await Bun.sleep(3000);
    cpu["streams open, no points"] = holdMeter.stop();
    extra.openRss = rssBytes(gateway.pid);
    if (openCount > 0) figures.gateway_bytes_per_stream = (extra.openRss - extra.idleRss) / openCount;
    say(
      `  RSS with ${fmt(openCount)} streams open ${fmt(extra.openRss / 1048576, 1)} MiB => ${fmt(figures.gateway_bytes_per_stream)} B per stream`,
    );
    if (openCount < 10_000) notes.push(`only ${openCount} streams were open (the figures ask for 10,000+)`);

    say(`[${elapsed()}] latency: steady ${fmt(o.rate)} points/s over the open streams, 3 s warm-up then ${o.steadyMs / 1000} s measured`);
    let meter = cpuMeter(pids, { rest: true });
    const metricsBefore = await fetchMetrics(gateway.url);
    for (const w of workers) w.send({ type: "steady", rate: o.rate / o.workers, warmupMs: 3000, durationMs: o.steadyMs });
    const steadied = await withTicker("steady", workers, Promise.all(workers.map((w) => w.next("steadied", o.steadyMs + 60_000))));
    cpu.steady = meter.stop();
    waited.steady = meter.waited;
    const metricsAfter = await fetchMetrics(gateway.url);
    const publish = histogramBetween(metricsBefore, metricsAfter, "gateway_publish_seconds");
    const ackWait = histogramBetween(metricsBefore, metricsAfter, "gateway_ack_wait_seconds");
    say(
      `  gateway during the phase: publish → PubAck p50 ≤ ${fmt(bucketBound(publish, 0.5) * 1000, 1)} ms, p99 ≤ ${fmt(bucketBound(publish, 0.99) * 1000, 1)} ms (${fmt(publish.count)} batches); a batch's first point taken → its acks written p50 ≤ ${fmt(bucketBound(ackWait, 0.5) * 1000, 1)} ms, p99 ≤ ${fmt(bucketBound(ackWait, 0.99) * 1000, 1)} ms; ${loopDelayLine(metricsBefore, metricsAfter)}`,
    );
    const h = createHistogram();
    for (const e of steadied) h.merge(e.histogram);
    figures.ack_p50_ms = h.quantile(0.5);
    figures.ack_p99_ms = h.quantile(0.99);
    extra.p999 = h.quantile(0.999);
    extra.max = h.max;
    extra.latencyCount = h.count;
    extra.steadyAcked = steadied.reduce((s, e) => s + e.acked, 0);
    extra.steadySent = steadied.reduce((s, e) => s + e.sent, 0);
    extra.steadySeconds = Math.max(...steadied.map((e) => e.seconds));
    const unacked = steadied.reduce((s, e) => s + e.unacked, 0);
    if (unacked > 0)
      notes.push(`latency phase: ${unacked} points were still unacked at its end; they count in the percentiles with their age then`);
    say(
      `  => offered ${fmt(extra.steadySent / extra.steadySeconds)} /s, acked ${fmt(extra.steadyAcked / extra.steadySeconds)} /s; ` +
        `ack latency p50 ${fmt(figures.ack_p50_ms, 2)} ms, p99 ${fmt(figures.ack_p99_ms, 2)} ms, p99.9 ${fmt(extra.p999, 2)} ms, max ${fmt(extra.max, 1)} ms (${fmt(h.count)} samples)`,
    );
    say(`  load generators' event loops in the phase: ${steadied.map((e) => loadGapLine(e.gaps)).join("; ")}`);
    for (const w of workers) w.send({ type: "settle", timeoutMs: 10_000 });
    await Promise.all(workers.map((w) => w.next("settled", 15_000)));

    say(`[${elapsed()}] throughput: each stream keeps ${o.window} points unacked, 3 s warm-up then ${o.blastMs / 1000} s measured`);
    meter = cpuMeter(pids, { rest: true });
    for (const w of workers) w.send({ type: "blast", window: o.window, warmupMs: 3000, durationMs: o.blastMs });
    const blasted = await withTicker("blast", workers, Promise.all(workers.map((w) => w.next("blasted", o.blastMs + 60_000))));
    cpu.blast = meter.stop();
    waited.blast = meter.waited;
    figures.gateway_points_per_s = blasted.reduce((s, e) => s + e.acked / e.seconds, 0);
    extra.blastAcked = blasted.reduce((s, e) => s + e.acked, 0);
    say(`  => ${fmt(figures.gateway_points_per_s)} acked points/s`);
    const reasons = new Map<number, number>();
    for (const e of blasted) for (const [r, c] of e.rejectReasons) reasons.set(r, (reasons.get(r) ?? 0) + c);
    if (reasons.size > 0) {
      notes.push(`rejected points: ${[...reasons].map(([r, c]) => `${reasonNames[r] ?? r} ${c}`).join(", ")}`);
    }
    const errors = sum(workers, "streamErrors");
    if (errors > 0)
      notes.push(
        `${errors} streams ended with an error (last: ${blasted
          .map((e) => e.lastError)
          .filter(Boolean)
          .join(" | ")})`,
      );

    say(`[${elapsed()}] closing streams, draining the gateway`);
    for (const w of workers) w.send({ type: "close", timeoutMs: 10_000 });
    await Promise.all(workers.map((w) => w.next("closed", 20_000).catch(() => undefined)));
    if (o.profile) {
      await gateway.stop("SIGTERM", 15_000);
      const file = readdirSync(profileDir).find((f) => f.endsWith(".cpuprofile"));
      if (!file) say("  no profile written (the gateway did not exit cleanly?)");
      else {
        const { functions, files } = summarizeProfile(join(profileDir, file), 15);
        say(`  gateway profile ${join(profileDir, file)} (whole run), self time by file:`);
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

  printTable(figures, mqttRuns, cpu, waited, extra, notes, o);
  const rounded: IngestFigures = {
    gateway_points_per_s: Math.round(figures.gateway_points_per_s),
    ack_p50_ms: Number(figures.ack_p50_ms.toFixed(2)),
    ack_p99_ms: Number(figures.ack_p99_ms.toFixed(2)),
    jetstream_ceiling_points_per_s: Math.round(figures.jetstream_ceiling_points_per_s),
    mosquitto_qos1_points_per_s: Math.round(figures.mosquitto_qos1_points_per_s),
    gateway_bytes_per_stream: Math.round(figures.gateway_bytes_per_stream),
  };
  // JSON has no NaN: a figure that was not measured is null.
  say(JSON.stringify(rounded, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? null : v)));
  return rounded;
}

function printTable(
  f: IngestFigures,
  mqttRuns: { connections: number; pointsPerSecond: number }[],
  cpu: Record<string, Record<string, number>>,
  waited: Record<string, Record<string, number>>,
  extra: {
    idleRss: number;
    openRss: number;
    steadySent: number;
    steadySeconds: number;
    steadyAcked: number;
    p999: number;
    max: number;
    jsBytes: number;
  },
  notes: string[],
  o: Options,
): void {
  const ok = (pass: boolean | null) => (pass === null ? "  -" : pass ? " ok" : " MISS");
  const rows: [string, string, string, string][] = [
    [
      "gateway acked points/s",
      fmt(f.gateway_points_per_s),
      `≥ ${fmt(TARGETS.gatewayPointsPerS)}`,
      ok(Number.isFinite(f.gateway_points_per_s) ? f.gateway_points_per_s >= TARGETS.gatewayPointsPerS : null),
    ],
    [
      "  vs Mosquitto QoS 1 best",
      fmt(f.mosquitto_qos1_points_per_s),
      "≤ gateway",
      ok(Number.isFinite(f.mosquitto_qos1_points_per_s) ? f.gateway_points_per_s >= f.mosquitto_qos1_points_per_s : null),
    ],
    ["  vs JetStream 1 msg/point", fmt(f.jetstream_ceiling_points_per_s), "(reference)", ok(null)],
    [`ack p50 @ ${fmt(o.rate)}/s (ms)`, fmt(f.ack_p50_ms, 2), "", ok(null)],
    [
      `ack p99 @ ${fmt(o.rate)}/s (ms)`,
      fmt(f.ack_p99_ms, 2),
      `≤ ${TARGETS.ackP99Ms}`,
      ok(Number.isFinite(f.ack_p99_ms) ? f.ack_p99_ms <= TARGETS.ackP99Ms : null),
    ],
    ["ack p99.9 / max (ms)", `${fmt(extra.p999, 2)} / ${fmt(extra.max, 1)}`, "", ok(null)],
    [
      "gateway bytes per stream",
      fmt(f.gateway_bytes_per_stream),
      `≤ ${fmt(TARGETS.bytesPerStream)}`,
      ok(Number.isFinite(f.gateway_bytes_per_stream) ? f.gateway_bytes_per_stream <= TARGETS.bytesPerStream : null),
    ],
    ["gateway RSS idle / streams open (MiB)", `${fmt(extra.idleRss / 1048576, 1)} / ${fmt(extra.openRss / 1048576, 1)}`, "", ok(null)],
  ];
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w1 = Math.max(...rows.map((r) => r[1].length));
  const w2 = Math.max(...rows.map((r) => r[2].length));
  say("");
  say(`${"figure".padEnd(w0)}  ${"measured".padStart(w1)}  ${"target".padEnd(w2)}`);
  say(`${"-".repeat(w0)}  ${"-".repeat(w1)}  ${"-".repeat(w2)}  ----`);
  for (const r of rows) say(`${r[0].padEnd(w0)}  ${r[1].padStart(w1)}  ${r[2].padEnd(w2)} ${r[3]}`);
  if (mqttRuns.length > 0)
    say(`Mosquitto QoS 1 by connections: ${mqttRuns.map((r) => `${r.connections}: ${fmt(r.pointsPerSecond)}`).join(", ")} points/s`);
  for (const [phase, shares] of Object.entries(cpu)) {
    say(
      `CPU during ${phase} (1.00 = one core): ${Object.entries(shares)
        .map(([k, v]) => `${k} ${fmt(v, 2)}`)
        .join(", ")}`,
    );
  }
  for (const [phase, shares] of Object.entries(waited)) {
    say(
      `Waiting for a core during ${phase} (busiest thread of each, share of the phase): ${Object.entries(shares)
        .map(([k, v]) => `${k} ${fmt(v, 3)}`)
        .join(", ")}`,
    );
  }
  for (const [phase, shares] of Object.entries(cpu)) {
    const rest = shares["rest of machine"];
    if (rest !== undefined && rest > 0.25) {
      notes.push(`other processes used ${fmt(rest, 2)} cores during the ${phase} phase: its figures are lower than on a quiet machine`);
    }
  }
  for (const n of notes) say(`note: ${n}`);
  say("");
}
