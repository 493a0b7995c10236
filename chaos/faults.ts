/**
 * The faults of a chaos run. Each one runs under the steady load the runner started (and may add
 * its own vehicles), injects its fault, recovers, and returns what it injected and measured; the
 * runner then stops the load and asks the one checker (chaos/checker.ts).
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import postgres from "postgres";
import { IngestService } from "../gen/fleet/v1/ingest_pb";
import { mintVehicleToken, mintWatchToken } from "../lib/auth";
import { addHistograms, bucketBound, fetchMetrics, histogramBetween } from "../bench/prom-histogram";
import { POSITIONS_STREAM } from "../lib/nats";
import { CHAOS_KEYS, until, type ChaosCluster } from "./cluster";
import { startLoad, type Load, type VehicleTally } from "./load";
import { startWatcher } from "./watcher";

export interface FaultContext {
  cluster: ChaosCluster;
  /** The runner's load (every gateway address, vehicles start on the first). */
  load: Load;
  /** Seconds of load this fault is given, spread over its phases. */
  seconds: number;
  log: (line: string) => void;
}

export interface FaultOutcome {
  /** Faults injected (a kill and a restart of the same process count once). */
  injected: number;
  /** Tallies of vehicles the fault started itself, checked with the runner's. */
  extra?: VehicleTally[];
  /** Further checks that failed, in words. */
  problems?: string[];
  /** What it measured, for the report. */
  notes?: string[];
}

export interface Fault {
  name: string;
  /** Why it was not run ("" when it can run here). */
  skip?: (cluster: ChaosCluster) => string;
  run(ctx: FaultContext): Promise<FaultOutcome>;
}

const dwell = (ctx: FaultContext, share: number) => Bun.sleep(Math.max(300, ctx.seconds * 1000 * share));

/** Waits until the stream has a leader and every replica is current (after a node came back). */
export async function settled(cluster: ChaosCluster, timeoutMs = 30_000): Promise<void> {
  await until(
    async () => {
      const info = await (await cluster.jsm()).streams.info(POSITIONS_STREAM);
      return (
        Boolean(info.cluster?.leader) && (info.cluster?.replicas ?? []).length === 2 && info.cluster!.replicas!.every((r) => r.current)
      );
    },
    "the positions stream to have a leader and two current replicas",
    timeoutMs,
  );
}

/** Acked points grow by at least `min` within `timeoutMs`: the load goes on. */
async function progresses(load: Load, what: string, min = 1, timeoutMs = 15_000): Promise<void> {
  const from = load.acked();
  await until(() => load.acked() >= from + min, what, timeoutMs);
}

const leaderKill: Fault = {
  name: "SIGKILL the stream leader, then a follower; restart each",
  async run(ctx) {
    const { cluster } = ctx;
    const notes: string[] = [];
    let killed = -1;
    for (const role of ["leader", "follower"] as const) {
      await settled(cluster);
      const leader = await cluster.streamLeader();
      // The follower: not the node just restarted, so that the two kills hit two nodes.
      const index = role === "leader" ? leader : [0, 1, 2].find((i) => i !== leader && i !== killed)!;
      killed = index;
      const node = cluster.nats.nodes[index]!;
      await dwell(ctx, 0.15);
      const t0 = performance.now();
      await node.stop("SIGKILL");
      ctx.log(`  SIGKILL ${role} ${node.name}`);
      await progresses(ctx.load, `acks after the ${role}'s SIGKILL`);
      notes.push(`${role} ${node.name} SIGKILLed: acks went on after ${Math.round(performance.now() - t0)} ms`);
      await dwell(ctx, 0.15);
      await node.start();
      await settled(cluster);
    }
    return { injected: 2, notes };
  },
};

const pause: Fault = {
  name: "SIGSTOP one node longer than the election timeout, then SIGCONT",
  async run(ctx) {
    const { cluster } = ctx;
    await settled(cluster);
    // The stream's leader: its followers must elect another while it sleeps, and it must step down when it wakes.
    const node = cluster.nats.nodes[await cluster.streamLeader()]!;
    await dwell(ctx, 0.2);
    const pid = node.pid()!;
    process.kill(pid, "SIGSTOP");
    ctx.log(`  SIGSTOP ${node.name} (the stream leader)`);
    const t0 = performance.now();
    const ackedBefore = ctx.load.acked();
    try {
      // Raft's election timeout is 4-9 s in nats-server 2.9: stay stopped beyond it. A client
      // connected to the stopped node waits on a silent socket until its NATS pings find it stale
      // and it moves to another member (~10 s with NATS_PING_INTERVAL's 2 s default), so acks early
      // in the pause come only from gateways on the other nodes.
      await Bun.sleep(Math.max(9_500, ctx.seconds * 1000 * 0.4));
    } finally {
      process.kill(pid, "SIGCONT");
    }
    const stopped = Math.round(performance.now() - t0);
    const duringPause = ctx.load.acked() - ackedBefore;
    await settled(cluster);
    const leader = cluster.nats.nodes[await cluster.streamLeader()]!;
    await progresses(ctx.load, "acks after SIGCONT");
    return {
      injected: 1,
      notes: [`${node.name} stopped ${stopped} ms (${duringPause} points acked meanwhile); leader now ${leader.name}`],
    };
  },
};

const partition: Fault = {
  name: "network partition: one nats-server cut off in its own namespace, then healed",
  skip: (cluster) => (cluster.nats.isolated ? "" : cluster.nats.whyNotIsolated),
  async run(ctx) {
    const { cluster } = ctx;
    const problems: string[] = [];
    await settled(cluster);
    const minorityNode = cluster.nats.nodes[2]!;
    // A gateway on the minority side: its NATS_URL names the cut-off node alone.
    const gw = await cluster.startService("gateway", { NATS_URL: minorityNode.url });
    const minority = await startLoad({ urls: [gw.proc.url], prefix: `minority-${Date.now().toString(36)}-`, vehicles: 3 });
    try {
      await progresses(minority, "acks through the minority node before the cut");
      await dwell(ctx, 0.1);
      cluster.nats.partition();
      // Points are numbered by push: none pushed after the cut may be acked until the heal. (One
      // pushed before may be: committed before the cut, its ack told later, by the stream's end or Resume.)
      const pushedAtCut = minority.clients.map((c) => c.stats.pushed);
      const ackedAtCut = minority.acked();
      ctx.log(`  partition: ${minorityNode.name} cut off`);
      const client = createClient(IngestService, createGrpcTransport({ baseUrl: gw.proc.url }));
      const probeId = `minority-probe-${Date.now().toString(36)}`;
      const token = await mintVehicleToken(CHAOS_KEYS, probeId, { fleetId: "chaos" });
      let code: Code | undefined;
      let message = "";
      try {
        await client.publish(
          {
            positions: [
              {
                vehicleId: probeId,
                seq: 1,
                lat: 52.5,
                lon: 13.4,
                speed: 1,
                accuracy: 5,
                recordedAt: { seconds: BigInt(Math.floor(Date.now() / 1000)), nanos: 0 },
              },
            ],
          },
          { headers: { authorization: `Bearer ${token}` }, timeoutMs: 20_000 },
        );
      } catch (err) {
        code = ConnectError.from(err).code;
        message = ConnectError.from(err).rawMessage;
      }
      if (code !== Code.Unavailable)
        problems.push(`a publish on the minority side answered ${code === undefined ? "OK" : Code[code]}, not UNAVAILABLE`);
      await progresses(ctx.load, "acks on the majority side during the partition");
      await dwell(ctx, 0.3);
      const during = minority.clients.reduce((n, c, i) => n + Math.max(0, c.stats.durableSeq - pushedAtCut[i]!), 0);
      const toldLate = minority.acked() - ackedAtCut - during;
      if (during > 0) problems.push(`${during} points pushed after the cut were acked on the minority side during the partition`);
      cluster.nats.heal();
      ctx.log(`  partition healed`);
      await settled(cluster);
      await progresses(minority, "acks through the healed node", 1, 30_000);
      const extra = await minority.stop();
      return {
        injected: 1,
        extra,
        problems,
        notes: [
          `minority publish answered ${code === undefined ? "OK" : Code[code]}: "${message}"; ${during} pushed after the cut acked there while cut off (${toldLate} committed before it, told after)`,
        ],
      };
    } finally {
      await minority.stop(1_000).catch(() => {});
      await gw.proc.stop("SIGKILL");
    }
  },
};

const gatewayKill: Fault = {
  name: "SIGKILL one of two gateways (vehicles fail over)",
  async run(ctx) {
    const gw = ctx.cluster.gateways[0]!;
    await dwell(ctx, 0.3);
    await gw.proc.stop("SIGKILL");
    ctx.log(`  SIGKILL ${gw.id}`);
    await progresses(ctx.load, "acks through the other gateway");
    await dwell(ctx, 0.3);
    const moved = ctx.load.clients.filter((c) => c.stats.failovers > 0).length;
    await gw.restart();
    const problems = moved === ctx.load.clients.length ? [] : [`only ${moved} of ${ctx.load.clients.length} vehicles failed over`];
    return { injected: 1, problems, notes: [`${moved} vehicles failed over to ${ctx.cluster.gateways[1]!.id}`] };
  },
};

const historyKill: Fault = {
  name: "SIGKILL one of two history writers mid-transaction",
  async run(ctx) {
    const h = ctx.cluster.history[0]!;
    await dwell(ctx, 0.3);
    const sql = postgres(ctx.cluster.stack.databaseUrl, { max: 1, onnotice: () => {} });
    // The writer's connections (history.ts names them "history <instance id>", the id holding the pid); not the reader's.
    const pattern = `^history [^ ]+-${h.proc.pid}-`;
    let caught = false;
    try {
      for (const end = Date.now() + 15_000; !caught && Date.now() < end; ) {
        const [r] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE application_name ~ ${pattern} AND xact_start IS NOT NULL AND state IN ('active', 'idle in transaction')`;
        if (r!.n > 0) caught = true;
      }
    } finally {
      await sql.end();
    }
    await h.proc.stop("SIGKILL");
    ctx.log(`  SIGKILL ${h.id}${caught ? " inside a write transaction" : " (no open transaction seen)"}`);
    await dwell(ctx, 0.3);
    await h.restart();
    return { injected: 1, notes: [`${h.id} killed ${caught ? "inside a write transaction" : "between transactions"}`] };
  },
};

const trackerKill: Fault = {
  name: "SIGKILL one of two trackers while watches are open",
  async run(ctx) {
    const [t1, t2] = ctx.cluster.trackers;
    const token = await mintWatchToken(CHAOS_KEYS, { all: true, subject: "chaos-watcher" });
    const ids = ctx.load.clients.map((c) => c.vehicleId);
    const watcher = startWatcher({ urls: [t1!.proc.url, t2!.proc.url], token, vehicleIds: ids });
    const problems: string[] = [];
    try {
      await until(() => watcher.snapshots > 0 && watcher.seen.size === ids.length, "the watch's snapshot and an update of every vehicle");
      await dwell(ctx, 0.3);
      await t1!.proc.stop("SIGKILL");
      ctx.log(`  SIGKILL ${t1!.id} under ${ids.length} watched vehicles`);
      await until(() => watcher.snapshots >= 2, "the watch to resume on the other tracker with a snapshot");
      await dwell(ctx, 0.3);
      // The newest acked point of each vehicle reaches the resumed watch.
      const stats = ctx.load.clients.map((c) => ({ id: c.vehicleId, durable: c.stats.durableSeq }));
      await until(
        () => stats.every((s) => (watcher.seen.get(s.id) ?? 0) >= s.durable),
        "the resumed watch to see each vehicle's newest acked point",
      );
      if (watcher.regressions > 0) problems.push(`the resumed watch went back ${watcher.regressions} times`);
      const notes = [
        `watch resumed on ${watcher.tracker === 1 ? t2!.id : t1!.id} after ${watcher.reconnects} reconnect(s), ${watcher.regressions} regressions`,
      ];
      await t1!.restart();
      return { injected: 1, problems, notes };
    } finally {
      watcher.close();
    }
  },
};

/** Every gateway's /metrics text, in the cluster's order. */
async function gatewayMetrics(cluster: ChaosCluster): Promise<string[]> {
  return Promise.all(cluster.gateways.map((g) => fetchMetrics(g.proc.adminUrl)));
}

const rollingRestart: Fault = {
  name: "rolling restart of the whole NATS cluster under load",
  async run(ctx) {
    const { cluster } = ctx;
    await settled(cluster);
    await dwell(ctx, 0.1);
    const before = await gatewayMetrics(cluster);
    const t0 = performance.now();
    for (const node of cluster.nats.nodes) {
      await node.stop("SIGTERM");
      ctx.log(`  restart ${node.name}`);
      await dwell(ctx, 0.1);
      await node.start();
      await settled(cluster);
      await progresses(ctx.load, `acks after ${node.name}'s restart`);
    }
    const rollMs = Math.round(performance.now() - t0);
    const after = await gatewayMetrics(cluster);
    const ackWait = addHistograms(before.map((b, i) => histogramBetween(b, after[i]!, "gateway_ack_wait_seconds")));
    const p99 = bucketBound(ackWait, 0.99) * 1000;
    const batches = ackWait.count;
    const p99Text = Number.isFinite(p99) ? `≤ ${p99} ms` : "above the largest bucket";
    return {
      injected: 3,
      notes: [`roll took ${rollMs} ms; gateway ack p99 during the roll ${p99Text} (${batches} batches, bucket bound)`],
    };
  },
};

export const FAULTS: readonly Fault[] = [leaderKill, pause, partition, gatewayKill, historyKill, trackerKill, rollingRestart];
