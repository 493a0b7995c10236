/**
 * The tracker assembled: Redis (state), NATS (JetStream consumer in, live events out), the
 * staleness sweeper and TrackerService on the one-port server. `main.ts` runs it as a process;
 * tests create it in-process.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import Redis from "ioredis";
import { TrackerService } from "../gen/fleet/v1/tracker_pb";
import { tokenKeys } from "../lib/auth";
import type { Config } from "../lib/config";
import { connectNats, ensurePositionsStream, positionsStreamSettings, CONSUMERS, POSITIONS_STREAM, type Nats } from "../lib/nats";
import { createLeader, redisLease, type Leader } from "../lib/leader";
import { createLogger, type Logger } from "../lib/log";
import { Gauge, createRegistry, type Registry } from "../lib/metrics";
import { createAuthInterceptor, createRpcInterceptor, serve, type Server } from "../lib/grpc";
import { startConsumer, type PositionsConsumer } from "./consumer";
import { createLivePublisher } from "./live";
import { createStore } from "./store";
import { startSweeper, type Sweeper } from "./sweeper";
import { createTrackerService } from "./tracker-service";

export interface TrackerOptions {
  config: Config;
  /** Default: config.natsUrl / config.redisUrl. */
  natsUrl?: string;
  redisUrl?: string;
  log?: Logger;
  registry?: Registry;
  /** Positions stream and its subjects (tests use their own). */
  stream?: string;
  subjects?: string;
  /** Durable consumer name (default CONSUMERS.tracker). */
  durable?: string;
  /** Redis key prefix (default config.redisPrefix). */
  prefix?: string;
  /** Consume the stream (default config.trackerConsume); false serves queries and watches only. */
  consume?: boolean;
}

export interface Tracker {
  readonly url: string;
  readonly port: number;
  /** Admin address of /metrics and /healthz (loopback by default). */
  readonly adminUrl: string;
  readonly registry: Registry;
  readonly redis: Redis;
  /** This instance's hold on the staleness sweep (one tracker sweeps). */
  readonly leader: Leader;
  /** Runs a staleness sweep now. */
  sweep(): Promise<number>;
  /** Stops consuming and serving; open watches end with UNAVAILABLE. */
  close(): Promise<void>;
}

export async function createTracker({
  config,
  natsUrl = config.natsUrl,
  redisUrl = config.redisUrl,
  log = createLogger({ level: config.logLevel, fields: { service: "tracker" } }),
  registry = createRegistry("tracker"),
  stream = POSITIONS_STREAM,
  subjects,
  durable = CONSUMERS.tracker,
  prefix = config.redisPrefix,
  consume = config.trackerConsume,
}: TrackerOptions): Promise<Tracker> {
  if (!natsUrl) throw new Error("NATS_URL is empty: the tracker needs a NATS server with JetStream");
  if (!redisUrl) throw new Error("REDIS_URL is empty: the tracker needs a Redis server");
  const instanceId = `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  const redis = new Redis(redisUrl, {
    // A command fails after two reconnect attempts instead of twenty: the consumer naks and waits, queries say UNAVAILABLE.
    maxRetriesPerRequest: 2,
    retryStrategy: (times) => Math.min(50 * times, 1000),
    lazyConnect: true,
  });
  let redisDown = false;
  redis.on("error", (err) => {
    if (!redisDown) log.warn("redis error", { err });
    redisDown = true;
  });
  redis.on("ready", () => {
    if (redisDown) log.info("redis reconnected");
    redisDown = false;
  });
  let nats: Nats | undefined;
  let consumer: PositionsConsumer | undefined;
  let sweeper: Sweeper | undefined;
  let leader: Leader | undefined;
  let server: Server | undefined;
  try {
    await redis.connect();
    // Its own live events reach its own watches directly (createLivePublisher's local), not echoed by NATS.
    nats = await connectNats({
      url: natsUrl,
      name: `tracker ${instanceId}`,
      log,
      noEcho: true,
      registry,
      pingIntervalMs: config.natsPingInterval,
    });
    await ensurePositionsStream(nats.jsm, {
      ...positionsStreamSettings(config),
      log,
      stream,
      subjects,
    });
    const store = createStore({ redis, prefix, pubsubPrefix: config.redisPubsub ? `${prefix}pos:` : "" });
    const live = createLivePublisher(nats.nc, (subject, data) => handlers.deliverLocal(subject, data));

    new Gauge({
      name: "tracker_vehicles",
      help: "vehicles by state: live (in the GEO set) or offline",
      labelNames: ["state"],
      registers: [registry],
      async collect() {
        try {
          const [a, i, d, v, o] = await store.counts(["s1", "s2", "s3", "s4", "s5"]);
          this.set({ state: "live" }, a! + i! + d! + v!);
          this.set({ state: "offline" }, o!);
        } catch {
          // Redis down: keep the last values.
        }
      },
    });

    const handlers = createTrackerService({
      store,
      nc: nats.nc,
      live,
      limits: {
        maxRadiusM: config.maxRadius,
        nearbyDefault: config.nearbyDefault,
        nearbyMax: config.nearbyMax,
        watchMaxVehicles: config.watchMaxVehicles,
        watchMaxPending: config.watchMaxPending,
        watchMaxLagMs: config.watchMaxLag,
        watchHeartbeatMs: config.watchHeartbeat,
        scanMax: config.scanMax,
        watchesPerToken: config.watchesPerToken,
        watchesPerConnection: config.watchesPerConnection,
      },
      registry,
      log,
    });
    if (consume) {
      consumer = await startConsumer({
        nats,
        redis,
        store,
        live,
        stream,
        durable,
        fetch: config.trackerFetch,
        startBackMs: config.staleAfter,
        registry,
        log,
      });
    }
    // The lease lives in the Redis the sweep works on (lib/leader.ts says why); three intervals unrenewed, and another tracker takes it.
    leader = createLeader({
      name: "sweep",
      ...redisLease({ redis, key: `${prefix}leader:sweep`, ttlMs: 3 * config.leaderInterval, owner: instanceId }),
      intervalMs: config.leaderInterval,
      log,
      registry,
    });
    const lead = leader;
    sweeper = startSweeper({
      store,
      live,
      staleAfterMs: config.staleAfter,
      intervalMs: config.sweepInterval,
      registry,
      log,
      isLeader: () => lead.isLeader(),
    });
    const natsHandle = nats;
    server = await serve({
      routes: (router) => router.service(TrackerService, handlers.service),
      // Watches over gRPC skip connect's per-message pipeline (most of a watch's cost): see lib/grpc/router.ts.
      nativeMethods: handlers.nativeMethods,
      host: config.host,
      port: config.trackerPort,
      admin: { host: config.adminHost, port: config.trackerAdminPort },
      registry,
      log,
      maxMessageBytes: config.maxMessageBytes,
      maxStreamsPerConnection: config.maxStreamsPerConnection,
      maxConnections: config.maxConnections,
      headersTimeoutMs: config.headersTimeout,
      unaryBodyTimeoutMs: config.unaryBodyTimeout,
      // Watches are long and may be quiet: the connection rule must not cut them.
      idleTimeoutMs: Math.max(config.idleTimeout, 10 * 60_000),
      healthz: () => natsHandle.connected() && redis.status === "ready",
      interceptors: [createRpcInterceptor({ log, registry }), createAuthInterceptor(tokenKeys(config))],
    });
    log.info("listening", { url: server.url, instanceId, stream, prefix, consume });

    let closed: Promise<void> | undefined;
    const srv = server;
    const sw = sweeper;
    return {
      url: srv.url,
      port: srv.port,
      adminUrl: srv.adminUrl,
      registry,
      redis,
      leader: lead,
      sweep: () => sw.sweep(),
      close: () =>
        (closed ??= (async () => {
          handlers.closeWatches();
          await srv.stopAccepting();
          await consumer?.stop();
          await sw.stop();
          await lead.close();
          handlers.close();
          await srv.close();
          await natsHandle.close();
          await redis.quit().catch(() => redis.disconnect());
        })()),
    };
  } catch (err) {
    await consumer?.stop().catch(() => {});
    await sweeper?.stop().catch(() => {});
    await leader?.close().catch(() => {});
    await server?.close().catch(() => {});
    await nats?.close().catch(() => {});
    redis.disconnect();
    throw err;
  }
}
