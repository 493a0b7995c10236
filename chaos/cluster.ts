/**
 * What a chaos run stands on: the 3-node NATS cluster (chaos/nats-cluster.ts), Redis and PostgreSQL
 * from the stack helper, and every service as its own process (two gateways on two addresses, two
 * trackers, two history writers), so that a fault is a real signal to a real process.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { nanos } from "@nats-io/nats-core";
import { AckPolicy, DeliverPolicy, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { freePort, startServiceProcess, startStack, type ServiceProcess, type Stack } from "../dev";
import { CONSUMERS, POSITIONS_STREAM } from "../lib/nats";
import { startChaosNats, type ChaosNatsCluster } from "./nats-cluster";

export type ServiceKind = "gateway" | "tracker" | "history";

export const CHAOS_KEYS = { secret: "chaos-run-secret-of-at-least-32-bytes-long", issuer: "fleet", audience: "fleet" } as const;

/** Redelivery of what a killed tracker or history process held, after this long (the services' default is 30 s). */
export const CHAOS_ACK_WAIT_MS = 2_000;

export interface ChaosService {
  readonly kind: ServiceKind;
  readonly id: string;
  /** The running process (replaced by restart). */
  proc: ServiceProcess;
  /** Starts it again with the same environment (the same port for a gateway). */
  restart(): Promise<void>;
}

export interface ChaosCluster {
  readonly dir: string;
  readonly nats: ChaosNatsCluster;
  readonly stack: Stack;
  /** PostgreSQL schema of the history tables of this cluster. */
  readonly schema: string;
  /** NATS_URL of the majority side: nodes 1 and 2 (node 3 is the one a partition cuts off). */
  readonly majorityUrl: string;
  readonly gateways: ChaosService[];
  readonly trackers: ChaosService[];
  readonly history: ChaosService[];
  /** Starts one more service process (e.g. a gateway on the minority side), stopped with the cluster. */
  startService(kind: ServiceKind, env?: Record<string, string>): Promise<ChaosService>;
  /** A JetStream manager on a node that is up. */
  jsm(): Promise<JetStreamManager>;
  /** The stream's leader node index (0-2), or -1 while there is none. */
  streamLeader(): Promise<number>;

  stop(): Promise<void>;
}

export interface ChaosClusterOptions {
  gateways?: number;
  trackers?: number;
  history?: number;
  /** Put NATS node 3 in its own network namespace when possible (default true). */
  isolate?: boolean;
  /** Service log level (default "info": startServiceProcess waits for the "listening" line). */
  logLevel?: string;
  /**
   * Redis and PostgreSQL to use (e.g. the test process's shared stack, left running on stop);
   * default a stack of its own. The cluster keeps to its own schema and Redis prefix either way.
   */
  stack?: Stack;
  /**
   * NATS servers of the trackers and history writers: "all" (default) lets a sink sit on the node a
   * partition cuts off, as it may in production; "majority" keeps them on nodes 1 and 2.
   */
  sinkNats?: "all" | "majority";
}

/** Starts servers and services; on failure stops what it started and throws. */
export async function startChaosCluster({
  gateways = 2,
  trackers = 2,
  history = 2,
  isolate = true,
  logLevel = "info",
  stack: given,
  sinkNats = "all",
}: ChaosClusterOptions = {}): Promise<ChaosCluster> {
  const dir = mkdtempSync(join(tmpdir(), "fleet-chaos-"));
  const stackStarting = given ? Promise.resolve(given) : startStack({ services: ["redis", "postgres"] });
  // Both settle before either failure is thrown, so that nothing started is left running.
  const [natsResult, stackResult] = await Promise.allSettled([startChaosNats({ dir, isolate }), stackStarting]);
  if (natsResult.status === "rejected" || stackResult.status === "rejected") {
    if (natsResult.status === "fulfilled") await natsResult.value.stop();
    if (stackResult.status === "fulfilled" && !given) await stackResult.value.stop();
    throw natsResult.status === "rejected" ? natsResult.reason : (stackResult as PromiseRejectedResult).reason;
  }
  const nats = natsResult.value;
  const stack = stackResult.value;
  const schema = `chaos_${process.pid}_${Date.now().toString(36)}`;
  const majorityUrl = nats.nodes
    .slice(0, 2)
    .map((n) => n.url)
    .join(",");
  const all: ChaosService[] = [];
  const base = (kind: ServiceKind): Record<string, string> => ({
    ...stack.env(),
    NATS_URL: kind === "gateway" || sinkNats === "majority" ? majorityUrl : nats.url,
    FLEET_STREAM_REPLICAS: "3",
    FLEET_JWT_SECRET: CHAOS_KEYS.secret,
    FLEET_JWT_ISSUER: CHAOS_KEYS.issuer,
    FLEET_JWT_AUDIENCE: CHAOS_KEYS.audience,
    // The load pushes points faster than a vehicle's clock would.
    GATEWAY_MAX_FIX_RATE: "0",
    FLEET_LEADER_INTERVAL: "1s",
    HISTORY_DB_SCHEMA: schema,
    TRACKER_REDIS_PREFIX: `${schema}:`,
    LOG_LEVEL: logLevel,
  });
  const counts: Record<ServiceKind, number> = { gateway: 0, tracker: 0, history: 0 };
  const startService = async (kind: ServiceKind, extra: Record<string, string> = {}): Promise<ChaosService> => {
    const id = `${kind}-${++counts[kind]}`;
    const port = kind === "gateway" ? String(await freePort()) : "0";
    const env = { ...base(kind), [`${kind.toUpperCase()}_PORT`]: port, ...extra };
    const launch = () => startServiceProcess({ service: kind, env, logFile: join(dir, `${id}.log`) });
    const svc: ChaosService = {
      kind,
      id,
      proc: await launch(),
      async restart() {
        await svc.proc.stop("SIGKILL");
        svc.proc = await launch();
      },
    };
    all.push(svc);
    return svc;
  };

  let nc: NatsConnection | undefined;
  const jsm = async () => {
    if (!nc || nc.isClosed()) nc = await connect({ servers: natsUrlsUp(), maxReconnectAttempts: -1 });
    return jetstreamManager(nc);
  };
  const natsUrlsUp = () => nats.nodes.filter((n) => n.pid()).map((n) => n.url);

  const cluster: ChaosCluster = {
    dir,
    nats,
    stack,
    schema,
    majorityUrl,
    gateways: [],
    trackers: [],
    history: [],
    startService,
    jsm,
    async streamLeader() {
      try {
        const info = await (await jsm()).streams.info(POSITIONS_STREAM);
        return nats.nodes.findIndex((n) => n.name === info.cluster?.leader);
      } catch {
        return -1;
      }
    },
    async stop() {
      await Promise.all(all.map((s) => s.proc.stop("SIGKILL")));
      await nc?.close().catch(() => {});
      await nats.stop();
      if (!given) await stack.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    // The first gateway makes the stream at R3; the consumers are made here with a short ack_wait
    // before any sink starts, so that what a killed sink held comes back in seconds.
    for (let i = 0; i < gateways; i++) cluster.gateways.push(await startService("gateway"));
    const m = await jsm();
    for (const durable of [CONSUMERS.tracker, CONSUMERS.history]) {
      await m.consumers.add(POSITIONS_STREAM, {
        durable_name: durable,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: nanos(CHAOS_ACK_WAIT_MS),
        max_ack_pending: 10_000,
      });
    }
    const sinks = [
      ...Array.from({ length: trackers }, () => "tracker" as const),
      ...Array.from({ length: history }, () => "history" as const),
    ];
    for (const svc of await Promise.all(sinks.map((k) => startService(k))))
      (svc.kind === "tracker" ? cluster.trackers : cluster.history).push(svc);
    cluster.trackers.sort((a, b) => a.id.localeCompare(b.id));
    cluster.history.sort((a, b) => a.id.localeCompare(b.id));
  } catch (err) {
    await cluster.stop().catch(() => {});
    throw err;
  }
  return cluster;
}

/** Waits until `check` returns true; throws naming `what` after the timeout. */
export async function until(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(100);
  }
}
