/**
 * `bun run bench scale`: what more nodes and more processes buy on this machine, in one run,
 * everything co-located on loopback (issue 17, item 6):
 *
 * 1. One nats-server: the raw JetStream publish ceiling at R1 (bench/jetstream-ceiling.ts), then one
 *    gateway (steady load for ack latency, then as fast as it acks), then two gateway processes on
 *    one port (GATEWAY_REUSE_PORT, the kernel spreads the load generators' connections over them).
 * 2. Three nats-servers in one JetStream cluster: the ceiling at R3, then one gateway with
 *    FLEET_STREAM_REPLICAS=3 (steady, then as fast as it acks).
 * 3. Sinks (one nats-server, Redis, PostgreSQL): a fixed backlog published to the positions stream,
 *    drained by one tracker, then one history writer; a second backlog drained by two trackers on the
 *    tracker's durable consumer, then two history writers on history's. Each sink runs alone.
 *
 * The gateway phases use the ingest bench's load generator (bench/ingest-worker.ts). Progress lines
 * and a table go to stdout; the LAST line is one JSON object (see `ScaleFigures`).
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { freePort, startServiceProcess, startStack, type ServiceProcess, type Stack } from "../dev";
import { PositionBatchSchema, PositionSchema, type Position } from "../gen/fleet/v1/position_pb";
import { loadConfig } from "../lib/config";
import { createLogger } from "../lib/log";
import { connectNats, ensurePositionsStream, partitionOf, positionsSubject } from "../lib/nats";
import { createHistogram } from "./histogram";
import { spawnWorker, sum, withTicker, type Worker } from "./ingest";
import { measureJetStreamCeiling } from "./jetstream-ceiling";
import { fetchMetrics } from "./prom-histogram";
import { childPids, cpuMeter } from "./proc";
import { positiveOption } from "./options";

/** The JSON line printed last. */
export interface ScaleFigures {
  r1_points_per_s: number;
  r1_ack_p99_ms: number;
  r3_points_per_s: number;
  r3_ack_p99_ms: number;
  gateways1_points_per_s: number;
  gateways2_points_per_s: number;
  tracker1_points_per_s: number;
  tracker2_points_per_s: number;
  history1_rows_per_s: number;
  history2_rows_per_s: number;
  jetstream_r1_ceiling: number;
  jetstream_r3_ceiling: number;
}

/** Issue 17's goals: R3 keeps at least two thirds of R1's throughput; two gateways beat one. */
const R3_SHARE_GOAL = 2 / 3;

const root = join(import.meta.dir, "..");

export const SCALE_HELP = `bun run bench scale [options]

Gateway → JetStream acked points/s and ack p99 at R1 on one nats-server and R3 on a 3-node
cluster, one gateway process vs two on one port (SO_REUSEPORT), the tracker and history with one
vs two processes draining a fixed backlog, beside the raw JetStream publish ceiling at R1 and R3,
in one run (~4 minutes). Prints progress, a table, and last one JSON line.

Options:
  --streams N          vehicle streams of the gateway phases (default 4000)
  --connections N      HTTP/2 connections in all (default 8)
  --workers N          load generator processes (default 2)
  --rate N             steady offered load for ack latency, points/s (default 16700)
  --seconds N          length of each measured gateway phase, after a 3 s warm-up (default 10)
  --ceiling-seconds N  length of each JetStream ceiling measurement (default 8)
  --window N           unacked points per stream as fast as the gateway acks (default 8)
  --backlog N          points of each sink backlog (default 600000)
  --skip-sinks         only the NATS and gateway phases
  --quick              smoke run: 1000 streams, short phases, 100,000-point backlogs (figures not comparable)
`;

interface Options {
  streams: number;
  connections: number;
  workers: number;
  rate: number;
  phaseMs: number;
  ceilingMs: number;
  window: number;
  backlog: number;
  skipSinks: boolean;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      streams: { type: "string" },
      connections: { type: "string" },
      workers: { type: "string" },
      rate: { type: "string" },
      seconds: { type: "string" },
      "ceiling-seconds": { type: "string" },
      window: { type: "string" },
      backlog: { type: "string" },
      "skip-sinks": { type: "boolean" },
      quick: { type: "boolean" },
    },
    strict: true,
  });
  const quick = values.quick === true;
  const num = positiveOption;
  const streams = num("streams", values.streams, quick ? 1000 : 4000);
  const workers = num("workers", values.workers, 2);
  // The gateway takes at most 1,000 streams per connection (GATEWAY_MAX_STREAMS_PER_CONNECTION).
  const connections = Math.max(num("connections", values.connections, quick ? 4 : 8), Math.ceil(streams / 950), workers);
  return {
    streams,
    connections,
    workers,
    rate: num("rate", values.rate, 16_700),
    phaseMs: num("seconds", values.seconds, quick ? 3 : 10) * 1000,
    ceilingMs: num("ceiling-seconds", values["ceiling-seconds"], quick ? 3 : 8) * 1000,
    window: num("window", values.window, 8),
    backlog: num("backlog", values.backlog, quick ? 100_000 : 600_000),
    skipSinks: values["skip-sinks"] === true,
  };
}

const fmt = (n: number, digits = 0) =>
  Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }) : "n/a";
const say = (line: string) => process.stdout.write(`${line}\n`);
const cpuLine = (shares: Record<string, number>) =>
  Object.entries(shares)
    .map(([k, v]) => `${k} ${fmt(v, 2)}`)
    .join(", ");

interface GatewayRun {
  pointsPerS: number;
  ackP99Ms: number;
  ackP50Ms: number;
  cpuBlast: Record<string, number>;
  notes: string[];
}

/**
 * Starts `gateways` gateway processes (several share one port with GATEWAY_REUSE_PORT), opens the
 * streams from the ingest bench's load generators, optionally a steady phase (ack latency), then a
 * blast (acked points/s); stops everything it started.
 */
async function gatewayRun(
  o: Options,
  stack: Stack,
  { gateways, replicas, steady, label, logDir }: { gateways: number; replicas: number; steady: boolean; label: string; logDir: string },
): Promise<GatewayRun> {
  const secret = randomBytes(24).toString("base64url");
  const keys = { secret, issuer: "fleet", audience: "fleet" };
  const port = gateways > 1 ? await freePort() : 0;
  const env: Record<string, string> = {
    ...stack.env(),
    GATEWAY_PORT: String(port),
    FLEET_JWT_SECRET: secret,
    FLEET_JWT_ISSUER: keys.issuer,
    FLEET_JWT_AUDIENCE: keys.audience,
    FLEET_STREAM_REPLICAS: String(replicas),
    LOG_LEVEL: "info",
    // As in bench ingest: the blast sends each vehicle faster than a receiver makes fixes.
    GATEWAY_MAX_FIX_RATE: "0",
    ...(gateways > 1 ? { GATEWAY_REUSE_PORT: "true" } : {}),
  };
  const procs: ServiceProcess[] = [];
  const workers: Worker[] = [];
  const notes: string[] = [];
  try {
    for (let i = 0; i < gateways; i++) {
      // One after the other: the first creates (or scales) the stream, the others find it.
      procs.push(await startServiceProcess({ service: "gateway", env, logFile: join(logDir, `scale-${label}-gateway${i + 1}.log`) }));
    }
    say(`  ${gateways} gateway(s) on ${procs[0]!.url} (pids ${procs.map((p) => p.pid).join(", ")})`);
    for (let i = 0; i < o.workers; i++) workers.push(spawnWorker());
    await Promise.all(workers.map((w) => w.next("hello", 10_000)));
    const prefix = `scale-${label}-${Date.now().toString(36)}`;
    const per = Math.ceil(o.streams / o.workers);
    const connPer = Math.ceil(o.connections / o.workers);
    workers.forEach((w, i) => {
      w.send({
        type: "init",
        url: procs[0]!.url,
        keys,
        connections: connPer,
        prefix,
        first: i * per,
        count: Math.min(per, o.streams - i * per),
      });
    });
    await Promise.all(workers.map((w) => w.next("ready", 60_000)));
    for (const w of workers) w.send({ type: "open", batch: 500, timeoutMs: 60_000 });
    const opened = await withTicker("open", workers, Promise.all(workers.map((w) => w.next("opened", 70_000))));
    const failed = opened.reduce((s, e) => s + e.failed, 0);
    say(`  ${fmt(opened.reduce((s, e) => s + e.open, 0))} streams open, ${failed} failed`);
    if (failed > 0) notes.push(`${label}: ${failed} streams failed to open (${opened.map((e) => e.lastError).join(" ")})`);
    const natsPids: Record<string, number | undefined> = {};
    for (let i = 0; i < stack.natsNodes; i++) natsPids[`nats${stack.natsNodes > 1 ? i + 1 : ""}`] = stack.natsNode(i).pid();
    const pids = {
      ...Object.fromEntries(procs.map((p, i) => [`gateway${gateways > 1 ? i + 1 : ""}`, p.pid])),
      ...natsPids,
      ...Object.fromEntries(workers.map((w, i) => [`load${i + 1}`, w.proc.pid])),
    };

    let ackP99Ms = NaN;
    let ackP50Ms = NaN;
    if (steady) {
      say(`  steady ${fmt(o.rate)} points/s, 3 s warm-up then ${o.phaseMs / 1000} s measured`);
      for (const w of workers) w.send({ type: "steady", rate: o.rate / o.workers, warmupMs: 3000, durationMs: o.phaseMs });
      const steadied = await withTicker("steady", workers, Promise.all(workers.map((w) => w.next("steadied", o.phaseMs + 60_000))));
      const h = createHistogram();
      for (const e of steadied) h.merge(e.histogram);
      ackP99Ms = h.quantile(0.99);
      ackP50Ms = h.quantile(0.5);
      const unacked = steadied.reduce((s, e) => s + e.unacked, 0);
      if (unacked > 0) notes.push(`${label}: ${unacked} points of the steady phase unacked at its end (counted with their age)`);
      say(`  => ack p50 ${fmt(ackP50Ms, 2)} ms, p99 ${fmt(ackP99Ms, 2)} ms (${fmt(h.count)} samples)`);
      for (const w of workers) w.send({ type: "settle", timeoutMs: 10_000 });
      await Promise.all(workers.map((w) => w.next("settled", 15_000)));
    }

    say(`  as fast as acked: ${o.window} points unacked per stream, 3 s warm-up then ${o.phaseMs / 1000} s measured`);
    const meter = cpuMeter(pids, { rest: true });
    const before = await Promise.all(procs.map((p) => fetchMetrics(p.adminUrl)));
    for (const w of workers) w.send({ type: "blast", window: o.window, warmupMs: 3000, durationMs: o.phaseMs });
    const blasted = await withTicker("blast", workers, Promise.all(workers.map((w) => w.next("blasted", o.phaseMs + 60_000))));
    const cpuBlast = meter.stop();
    const after = await Promise.all(procs.map((p) => fetchMetrics(p.adminUrl)));
    const pointsPerS = blasted.reduce((s, e) => s + e.acked / e.seconds, 0);
    say(`  => ${fmt(pointsPerS)} acked points/s; CPU (1.00 = one core): ${cpuLine(cpuBlast)}`);
    if (gateways > 1) {
      // How the kernel spread the connections: each gateway's share of the points it took.
      const taken = procs.map(
        (_, i) => counterSum(after[i]!, "gateway_points_accepted_total") - counterSum(before[i]!, "gateway_points_accepted_total"),
      );
      const all = taken.reduce((a, b) => a + b, 0);
      if (all > 0) say(`  share of the points per gateway: ${taken.map((t) => `${fmt((t * 100) / all)}%`).join(" / ")}`);
    }
    const errors = sum(workers, "streamErrors");
    if (errors > 0) notes.push(`${label}: ${errors} streams ended with an error`);
    const rejected = sum(workers, "rejected");
    if (rejected > 0) notes.push(`${label}: ${rejected} points refused`);
    for (const w of workers) w.send({ type: "close", timeoutMs: 10_000 });
    await Promise.all(workers.map((w) => w.next("closed", 20_000).catch(() => undefined)));
    return { pointsPerS, ackP99Ms, ackP50Ms, cpuBlast, notes };
  } finally {
    for (const w of workers) w.proc.kill();
    await Promise.all(procs.map((p) => p.stop("SIGTERM", 5000)));
  }
}

/** Sum of a counter's samples over all its label sets in a Prometheus text page. */
function counterSum(text: string, name: string): number {
  let total = 0;
  const re = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, "gm");
  for (const m of text.matchAll(re)) total += Number(m[1]);
  return total;
}

/**
 * Publishes `points` positions to the positions stream as the gateway does (one PositionBatch per
 * partition and message, here of 1,000 points): `vehicles` vehicles at 1 Hz, the newest ending at
 * `endMs`. Returns the points published.
 */
async function publishBacklog(
  nats: Awaited<ReturnType<typeof connectNats>>,
  { points, vehicles, endMs, partitions, tag }: { points: number; vehicles: number; endMs: number; partitions: number; tag: string },
): Promise<number> {
  const perVehicle = Math.ceil(points / vehicles);
  const startMs = endMs - perVehicle * 1000;
  const byPartition = new Map<number, Position[]>();
  const pending: Promise<unknown>[] = [];
  let published = 0;
  let msg = 0;
  const flush = async (part: number) => {
    const batch = byPartition.get(part)!;
    byPartition.set(part, []);
    const data = toBinary(PositionBatchSchema, create(PositionBatchSchema, { positions: batch }));
    pending.push(nats.js.publish(positionsSubject(part), data, { msgID: `scale-${tag}-${msg++}` }));
    published += batch.length;
    // A few publishes in flight: the backlog is written quickly, not measured.
    if (pending.length >= 32) await Promise.all(pending.splice(0));
  };
  let n = 0;
  for (let s = 0; s < perVehicle && n < points; s++) {
    const at = startMs + s * 1000;
    for (let v = 0; v < vehicles && n < points; v++, n++) {
      const vehicleId = `scale-veh-${v}`;
      const p = create(PositionSchema, {
        vehicleId,
        fleetId: `fleet-${v % 10}`,
        seq: Math.round(at / 1000),
        recordedAt: timestampFromMs(at),
        receivedAt: timestampFromMs(at + 40),
        lat: 52.4 + (v % 100) / 500 + s * 1e-5,
        lon: 13.2 + Math.floor(v / 100) / 500 + s * 1e-5,
        speed: 8,
        heading: 90,
        accuracy: 5,
      });
      const part = partitionOf(vehicleId, partitions);
      const list = byPartition.get(part) ?? byPartition.set(part, []).get(part)!;
      list.push(p);
      if (list.length >= 1000) await flush(part);
    }
  }
  for (const [part, list] of byPartition) if (list.length > 0) await flush(part);
  await Promise.all(pending);
  return published;
}

/**
 * Starts `count` processes of a sink at once on the backlog waiting in its durable consumer and
 * measures how fast they drain it: from the moment all are listening (their counters read then)
 * until the counters' sum reaches `target`.
 */
async function drainRun(
  stack: Stack,
  {
    service,
    count,
    counter,
    target,
    env,
    logDir,
  }: { service: "tracker" | "history"; count: number; counter: string; target: number; env: Record<string, string>; logDir: string },
): Promise<{ perS: number; seconds: number; cpu: Record<string, number> }> {
  const procs = await Promise.all(
    Array.from({ length: count }, (_, i) =>
      startServiceProcess({ service, env, logFile: join(logDir, `scale-${service}${count}-${i + 1}.log`) }),
    ),
  );
  try {
    const counted = async () =>
      (await Promise.all(procs.map((p) => fetchMetrics(p.adminUrl)))).reduce((s, t) => s + counterSum(t, counter), 0);
    const t0 = performance.now();
    const c0 = await counted();
    const server = service === "tracker" ? "redis" : "postgres";
    // PostgreSQL's work is in its backends, the postmaster's children (the writers' connections are open by now).
    const backends = server === "postgres" ? childPids(stack.pid("postgres")!, "postgres") : [];
    const meter = cpuMeter(
      {
        ...Object.fromEntries(procs.map((p, i) => [`${service}${count > 1 ? i + 1 : ""}`, p.pid])),
        nats: stack.pid("nats"),
        [server]: stack.pid(server),
        ...Object.fromEntries(backends.map((pid) => [`backend ${pid}`, pid])),
      },
      { rest: true },
    );
    let c = c0;
    while (c < target) {
      await Bun.sleep(50);
      c = await counted();
      if (performance.now() - t0 > 300_000)
        throw new Error(`${count} ${service} process(es) took ${fmt(c)} of ${fmt(target)} points in 5 minutes`);
    }
    const seconds = (performance.now() - t0) / 1000;
    const cpu = meter.stop();
    if (backends.length > 0) {
      let total = 0;
      for (const pid of backends) {
        total += cpu[`backend ${pid}`] || 0;
        delete cpu[`backend ${pid}`];
      }
      cpu.postgres = (cpu.postgres || 0) + total;
      const rest = cpu["rest of machine"]!;
      delete cpu["rest of machine"];
      cpu["rest of machine"] = rest;
    }
    return { perS: (target - c0) / seconds, seconds, cpu };
  } finally {
    await Promise.all(procs.map((p) => p.stop("SIGTERM", 10_000)));
  }
}

/** Runs the whole scale bench; returns the figures it printed last. */
export async function runScaleBench(argv: string[]): Promise<ScaleFigures> {
  const o = parseOptions(argv);
  const started = performance.now();
  const elapsed = () => `${((performance.now() - started) / 1000).toFixed(0)}s`;
  const f: ScaleFigures = {
    r1_points_per_s: NaN,
    r1_ack_p99_ms: NaN,
    r3_points_per_s: NaN,
    r3_ack_p99_ms: NaN,
    gateways1_points_per_s: NaN,
    gateways2_points_per_s: NaN,
    tracker1_points_per_s: NaN,
    tracker2_points_per_s: NaN,
    history1_rows_per_s: NaN,
    history2_rows_per_s: NaN,
    jetstream_r1_ceiling: NaN,
    jetstream_r3_ceiling: NaN,
  };
  const notes: string[] = [];
  const cpu: Record<string, Record<string, number>> = {};
  const logDir = join(root, ".fleet", "logs");
  mkdirSync(logDir, { recursive: true });
  let stack: Stack | null = null;
  const onSignal = () => {
    say("interrupted: stopping what the bench started");
    void (stack?.stop() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const load = readLoad();

  try {
    say(
      `bench scale: ${fmt(o.streams)} streams on ${o.connections} HTTP/2 connections from ${o.workers} load processes; 2 cores shared by everything; load average ${load}`,
    );

    say(`[${elapsed()}] one nats-server`);
    stack = await startStack({ services: ["nats"] });
    say(`[${elapsed()}] JetStream ceiling at R1: one client, one message per point, window 4096, ${o.ceilingMs / 1000} s`);
    let meter = cpuMeter({ nats: stack.pid("nats"), bench: process.pid }, { rest: true });
    f.jetstream_r1_ceiling = (
      await measureJetStreamCeiling({ natsUrl: stack.natsUrl, durationMs: o.ceilingMs, vehicles: o.streams, replicas: 1 })
    ).pointsPerSecond;
    cpu["JetStream ceiling R1"] = meter.stop();
    say(`  => ${fmt(f.jetstream_r1_ceiling)} points/s`);
    say(`[${elapsed()}] one gateway, R1`);
    const r1 = await gatewayRun(o, stack, { gateways: 1, replicas: 1, steady: true, label: "r1", logDir });
    f.r1_points_per_s = r1.pointsPerS;
    f.r1_ack_p99_ms = r1.ackP99Ms;
    f.gateways1_points_per_s = r1.pointsPerS;
    cpu["one gateway R1, blast"] = r1.cpuBlast;
    notes.push(...r1.notes);
    say(`[${elapsed()}] two gateways on one port (SO_REUSEPORT), R1`);
    const g2 = await gatewayRun(o, stack, { gateways: 2, replicas: 1, steady: false, label: "gw2", logDir });
    f.gateways2_points_per_s = g2.pointsPerS;
    cpu["two gateways R1, blast"] = g2.cpuBlast;
    notes.push(...g2.notes);
    await stack.stop();
    stack = null;

    say(`[${elapsed()}] three nats-servers in one JetStream cluster`);
    stack = await startStack({ services: ["nats"], natsNodes: 3 });
    say(`[${elapsed()}] JetStream ceiling at R3, ${o.ceilingMs / 1000} s`);
    const nodePids = () => Object.fromEntries([0, 1, 2].map((i) => [`nats${i + 1}`, stack!.natsNode(i).pid()]));
    meter = cpuMeter({ ...nodePids(), bench: process.pid }, { rest: true });
    f.jetstream_r3_ceiling = (
      await measureJetStreamCeiling({ natsUrl: stack.natsUrl, durationMs: o.ceilingMs, vehicles: o.streams, replicas: 3 })
    ).pointsPerSecond;
    cpu["JetStream ceiling R3"] = meter.stop();
    say(`  => ${fmt(f.jetstream_r3_ceiling)} points/s`);
    say(`[${elapsed()}] one gateway, R3 (FLEET_STREAM_REPLICAS=3)`);
    const r3 = await gatewayRun(o, stack, { gateways: 1, replicas: 3, steady: true, label: "r3", logDir });
    f.r3_points_per_s = r3.pointsPerS;
    f.r3_ack_p99_ms = r3.ackP99Ms;
    cpu["one gateway R3, blast"] = r3.cpuBlast;
    notes.push(...r3.notes);
    await stack.stop();
    stack = null;

    if (!o.skipSinks) {
      say(`[${elapsed()}] sinks: one nats-server, Redis, PostgreSQL`);
      stack = await startStack({ services: ["nats", "redis", "postgres"] });
      const env: Record<string, string> = {
        ...stack.env(),
        TRACKER_PORT: "0",
        HISTORY_PORT: "0",
        HISTORY_DB_SCHEMA: "scale",
        LOG_LEVEL: "info",
      };
      const config = loadConfig(env);
      const nats = await connectNats({ url: stack.natsUrl, name: "bench-scale", log: createLogger({ level: "warn" }) });
      try {
        await ensurePositionsStream(nats.jsm, {
          duplicateWindow: config.duplicateWindow,
          streamMaxAge: config.streamMaxAge,
          streamMaxBytes: config.streamMaxBytes,
        });
        const vehicles = 2000;
        const perVehicle = Math.ceil(o.backlog / vehicles);
        const now = Date.now();
        for (const [round, count] of [
          [1, 1],
          [2, 2],
        ] as const) {
          // The second backlog's fixes are newer than the first's, so the tracker applies them too.
          const endMs = now - (2 - round) * perVehicle * 1000;
          let t = performance.now();
          const points = await publishBacklog(nats, {
            points: o.backlog,
            vehicles,
            endMs,
            partitions: config.partitions,
            tag: `b${round}`,
          });
          say(`[${elapsed()}] backlog ${round}: ${fmt(points)} points published in ${fmt((performance.now() - t) / 1000, 1)} s`);
          // Counters start at 0 in fresh processes: each run drains exactly this backlog.
          t = performance.now();
          const tr = await drainRun(stack, { service: "tracker", count, counter: "tracker_points_total", target: points, env, logDir });
          say(`  ${count} tracker(s): ${fmt(tr.perS)} points/s into Redis (${fmt(tr.seconds, 1)} s); CPU: ${cpuLine(tr.cpu)}`);
          cpu[`${count} tracker(s)`] = tr.cpu;
          const hi = await drainRun(stack, {
            service: "history",
            count,
            counter: "history_rows_written_total",
            target: points,
            env,
            logDir,
          });
          say(`  ${count} history writer(s): ${fmt(hi.perS)} rows/s into PostgreSQL (${fmt(hi.seconds, 1)} s); CPU: ${cpuLine(hi.cpu)}`);
          cpu[`${count} history writer(s)`] = hi.cpu;
          if (count === 1) {
            f.tracker1_points_per_s = tr.perS;
            f.history1_rows_per_s = hi.perS;
          } else {
            f.tracker2_points_per_s = tr.perS;
            f.history2_rows_per_s = hi.perS;
          }
        }
      } finally {
        await nats.close();
      }
      await stack.stop();
      stack = null;
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await stack?.stop().catch((err) => say(`cleanup: ${err instanceof Error ? err.message : String(err)}`));
  }

  printTable(f, cpu, notes, o, load, readLoad());
  const rounded = Object.fromEntries(
    Object.entries(f).map(([k, v]) => [k, k.endsWith("_ms") ? Number((v as number).toFixed(2)) : Math.round(v as number)]),
  ) as unknown as ScaleFigures;
  // JSON has no NaN: a figure that was not measured is null.
  say(JSON.stringify(rounded, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? null : v)));
  return rounded;
}

/** The 1-minute load average, to say whether the machine was shared during the run. */
function readLoad(): string {
  try {
    return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  } catch {
    return "n/a";
  }
}

function printTable(
  f: ScaleFigures,
  cpu: Record<string, Record<string, number>>,
  notes: string[],
  o: Options,
  loadBefore: string,
  loadAfter: string,
): void {
  const pct = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${fmt((a * 100) / b)}%` : "n/a");
  const ok = (pass: boolean | null) => (pass === null ? "" : pass ? "ok" : "MISS");
  const rows: [string, string, string, string, string][] = [
    // figure, measured, beside it, goal, verdict
    ["JetStream publish ceiling R1 (points/s)", fmt(f.jetstream_r1_ceiling), "", "reference", ""],
    [
      "JetStream publish ceiling R3 (points/s)",
      fmt(f.jetstream_r3_ceiling),
      `${pct(f.jetstream_r3_ceiling, f.jetstream_r1_ceiling)} of R1`,
      "reference",
      "",
    ],
    ["gateway acked points/s, R1 one node", fmt(f.r1_points_per_s), "", "", ""],
    [
      "gateway acked points/s, R3 three nodes",
      fmt(f.r3_points_per_s),
      `${pct(f.r3_points_per_s, f.r1_points_per_s)} of R1`,
      "≥ 67% of R1",
      ok(
        Number.isFinite(f.r3_points_per_s) && Number.isFinite(f.r1_points_per_s)
          ? f.r3_points_per_s >= R3_SHARE_GOAL * f.r1_points_per_s
          : null,
      ),
    ],
    [`ack p99 @ ${fmt(o.rate)}/s, R1 (ms)`, fmt(f.r1_ack_p99_ms, 2), "", "", ""],
    [`ack p99 @ ${fmt(o.rate)}/s, R3 (ms)`, fmt(f.r3_ack_p99_ms, 2), "", "", ""],
    ["one gateway, R1 (points/s)", fmt(f.gateways1_points_per_s), "", "", ""],
    [
      "two gateways, one port, R1 (points/s)",
      fmt(f.gateways2_points_per_s),
      `${pct(f.gateways2_points_per_s, f.gateways1_points_per_s)} of one`,
      "> one",
      ok(
        Number.isFinite(f.gateways2_points_per_s) && Number.isFinite(f.gateways1_points_per_s)
          ? f.gateways2_points_per_s > f.gateways1_points_per_s
          : null,
      ),
    ],
    ["tracker, 1 process (points/s into Redis)", fmt(f.tracker1_points_per_s), "", "", ""],
    ["tracker, 2 processes", fmt(f.tracker2_points_per_s), `${pct(f.tracker2_points_per_s, f.tracker1_points_per_s)} of one`, "", ""],
    ["history, 1 process (rows/s into PostgreSQL)", fmt(f.history1_rows_per_s), "", "", ""],
    ["history, 2 processes", fmt(f.history2_rows_per_s), `${pct(f.history2_rows_per_s, f.history1_rows_per_s)} of one`, "", ""],
  ];
  const w = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => r[i]!.length)));
  say("");
  say(`${"figure".padEnd(w[0]!)}  ${"measured".padStart(w[1]!)}  ${"".padEnd(w[2]!)}  ${"goal".padEnd(w[3]!)}`);
  say(`${"-".repeat(w[0]!)}  ${"-".repeat(w[1]!)}  ${"-".repeat(w[2]!)}  ${"-".repeat(w[3]!)}  ----`);
  for (const r of rows) say(`${r[0].padEnd(w[0]!)}  ${r[1].padStart(w[1]!)}  ${r[2].padEnd(w[2]!)}  ${r[3].padEnd(w[3]!)}  ${r[4]}`);
  for (const [phase, shares] of Object.entries(cpu)) say(`CPU during ${phase} (1.00 = one core): ${cpuLine(shares)}`);
  for (const [phase, shares] of Object.entries(cpu)) {
    const rest = shares["rest of machine"];
    if (rest !== undefined && rest > 0.25) notes.push(`other processes used ${fmt(rest, 2)} cores during ${phase}: its figures are low`);
  }
  notes.push(`load average (1, 5, 15 min) before the run ${loadBefore}, after ${loadAfter}`);
  for (const n of notes) say(`note: ${n}`);
  say("");
}
