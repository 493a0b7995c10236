/**
 * The gateway assembled: NATS connection, positions stream, durable-seq memory (rebuilt from the
 * stream, then followed), batcher, rate limiter and IngestService on the one-port server.
 * `main.ts` runs it as a process; tests create it in-process.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { IngestService } from "../gen/fleet/v1/ingest_pb";
import { tokenKeys } from "../lib/auth";
import type { Config } from "../lib/config";
import {
  connectNats,
  ensurePositionsStream,
  positionsStreamSettings,
  watchStreamLimits,
  POSITIONS_STREAM,
  positionsSubject,
  type Nats,
} from "../lib/nats";
import { createLogger, type Logger } from "../lib/log";
import { Gauge, createRegistry, type Registry } from "../lib/metrics";
import { createAuthInterceptor, createNativeGrpc, createRpcInterceptor, serve, serveLite, type LiteServer, type Server } from "../lib/grpc";
import { createBatcher } from "./batcher";
import { createDurableSeqs, followPositions, type Follower } from "./durable-seqs";
import { createIngestService } from "./ingest-service";
import { createRateLimiter } from "./rate-limit";
import { createStreamWatch } from "./stream-watch";

/**
 * Longest a Resume waits for the follower to read the stream to its end. Past it Resume answers what
 * is known: lower than the truth at worst, so the vehicle re-sends and the sinks drop duplicates.
 */
const RESUME_CATCH_UP_MS = 2_000;

export interface GatewayOptions {
  config: Config;
  /** Default: config.natsUrl. */
  natsUrl?: string;
  log?: Logger;
  registry?: Registry;
  /** Unique per process; default host-pid-random. */
  instanceId?: string;
  /** Stream and subject prefix, for tests sharing one NATS (default FLEET_POSITIONS, fleet.pos.). */
  stream?: string;
  subjectPrefix?: string;
  /** ms to wait for one PubAck, and attempts per batch. */
  publishTimeoutMs?: number;
  publishAttempts?: number;
}

export interface Gateway {
  /** Base URL of the one port, e.g. http://127.0.0.1:50051. */
  readonly url: string;
  readonly port: number;
  /** The vehicle port's URL (GATEWAY_VEHICLE_PORT: IngestService over gRPC on lib/h2), when it is on. */
  readonly vehicleUrl: string | undefined;
  readonly vehiclePort: number | undefined;
  /** Admin address of /metrics and /healthz (loopback by default). */
  readonly adminUrl: string;
  readonly instanceId: string;
  readonly registry: Registry;
  /**
   * Graceful stop: refuse new calls, stop reading streams, publish and ack what is in flight,
   * let calls finish, within config.drainTimeout. Then close().
   */
  drain(): Promise<void>;
  /** Immediate stop: connections are cut, NATS closed. */
  close(): Promise<void>;
}

/** Starts a gateway; resolves once it listens (after the durable seqs were rebuilt). */
export async function createGateway({
  config,
  natsUrl = config.natsUrl,
  log = createLogger({ level: config.logLevel, fields: { service: "gateway" } }),
  registry = createRegistry("gateway"),
  instanceId = `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`,
  stream = POSITIONS_STREAM,
  subjectPrefix,
  publishTimeoutMs = 2000,
  publishAttempts = 3,
}: GatewayOptions): Promise<Gateway> {
  if (!natsUrl) throw new Error("NATS_URL is empty: the gateway needs a NATS server with JetStream");
  const nats: Nats = await connectNats({
    url: natsUrl,
    name: `gateway ${instanceId}`,
    log,
    registry,
    pingIntervalMs: config.natsPingInterval,
  });
  let follower: Follower | undefined;
  const timers: ReturnType<typeof setInterval>[] = [];
  try {
    const subjectOf = subjectPrefix ? (i: number) => `${subjectPrefix}${i}` : positionsSubject;
    await ensurePositionsStream(nats.jsm, {
      ...positionsStreamSettings(config),
      log,
      stream,
      subjects: subjectPrefix ? `${subjectPrefix}>` : undefined,
    });

    // The gateway is what a full stream refuses: its metrics and log say so ahead of time.
    timers.push(watchStreamLimits(nats.jsm, { stream, registry, log }));
    const seqs = createDurableSeqs({ forgetAfterMs: Math.max(config.duplicateWindow, 60_000) });
    follower = await followPositions({
      js: nats.js,
      jsm: nats.jsm,
      stream,
      instanceId,
      windowMs: config.duplicateWindow,
      seqs,
      log,
    });
    await follower.ready;

    const limits = {
      fixRate: config.fixRate,
      fixBurst: config.fixBurst,
      bytesPerSecond: config.vehicleBytesPerSecond,
      burstBytes: config.vehicleBurstBytes,
    };
    const limiter = createRateLimiter(limits);
    timers.push(
      setInterval(() => {
        seqs.prune();
        limiter.prune();
      }, 30_000),
    );
    new Gauge({
      name: "gateway_vehicles_remembered",
      help: "vehicles in the durable-seq memory",
      registers: [registry],
      collect() {
        this.set(seqs.size);
      },
    });

    const batcher = createBatcher({
      js: nats.js,
      partitions: config.partitions,
      subjectOf,
      batchDelay: config.batchDelay,
      batchMaxPoints: config.batchMaxPoints,
      maxInFlight: config.maxInFlight,
      publishTimeoutMs,
      publishAttempts,
      instanceId,
      registry,
      log,
    });
    const streams = createStreamWatch({ idleTimeoutMs: config.idleTimeout });
    let draining = false;
    const ingest = createIngestService({
      batcher,
      seqs,
      limiter,
      streams,
      validate: { maxClockSkew: config.maxClockSkew, maxPointAge: config.maxPointAge, maxSpeed: config.maxSpeed },
      limits,
      maxUnsentRejections: config.maxUnsentRejections,
      registry,
      log,
      draining: () => draining,
      // A vehicle moving here from another gateway: what that one published must be read first.
      beforeResume: () => follower!.caughtUp(RESUME_CATCH_UP_MS),
    });

    // Outermost first: the rpc interceptor sees (and maps) auth failures too.
    const interceptors = [createRpcInterceptor({ log, registry }), createAuthInterceptor(tokenKeys(config))];
    const tls = config.tlsCert ? { cert: readFileSync(config.tlsCert), key: readFileSync(config.tlsKey) } : undefined;
    const server: Server = await serve({
      routes: (router) => router.service(IngestService, ingest.service),
      // Upload and Sync over gRPC skip connect's per-message pipeline: see lib/grpc/router.ts.
      nativeMethods: ingest.nativeMethods,
      host: config.host,
      port: config.gatewayPort,
      reusePort: config.gatewayReusePort,
      admin: { host: config.adminHost, port: config.gatewayAdminPort },
      tls,
      registry,
      log,
      maxMessageBytes: config.maxMessageBytes,
      maxStreamsPerConnection: config.maxStreamsPerConnection,
      maxConnections: config.maxConnections,
      headersTimeoutMs: config.headersTimeout,
      unaryBodyTimeoutMs: config.unaryBodyTimeout,
      idleTimeoutMs: config.idleTimeout,
      healthz: () => nats.connected(),
      interceptors,
    });
    let vehicles: LiteServer | undefined;
    if (config.gatewayVehiclePort >= 0) {
      try {
        // The same native methods and interceptors as the main port, on lib/h2 (see lib/grpc/serve-lite.ts).
        vehicles = await serveLite({
          native: createNativeGrpc({
            methods: ingest.nativeMethods,
            interceptors,
            maxMessageBytes: config.maxMessageBytes,
            unaryBodyTimeoutMs: config.unaryBodyTimeout,
          }),
          host: config.host,
          port: config.gatewayVehiclePort,
          reusePort: config.gatewayReusePort,
          tls,
          log,
          maxStreamsPerConnection: config.maxStreamsPerConnection,
          maxConnections: config.maxConnections,
          idleTimeoutMs: config.idleTimeout,
          mainUrl: server.url,
          registry,
        });
      } catch (err) {
        await server.close();
        throw err;
      }
      log.info("vehicle port listening", { url: vehicles.url, serves: "fleet.v1.IngestService over gRPC" });
    }
    // "listening" is the line scripts wait for (dev/service-process.ts, fleet up): logged once every
    // port accepts, so a vehicle told the gateway is up never finds its port closed.
    log.info("listening", { url: server.url, vehicleUrl: vehicles?.url, instanceId, partitions: config.partitions });

    let closed: Promise<void> | undefined;
    const close = () =>
      (closed ??= (async () => {
        for (const t of timers) clearInterval(t);
        streams.close();
        await vehicles?.close();
        await server.close();
        await follower?.stop();
        await nats.close();
      })());

    return {
      url: server.url,
      port: server.port,
      vehicleUrl: vehicles?.url,
      vehiclePort: vehicles?.port,
      adminUrl: server.adminUrl,
      instanceId,
      registry,
      async drain() {
        const until = Date.now() + config.drainTimeout;
        draining = true;
        log.info("draining", { inFlight: batcher.inFlight, streams: streams.size });
        await server.stopAccepting();
        await vehicles?.stopAccepting();
        streams.drain();
        const published = await batcher.drain(Math.max(0, until - Date.now()));
        const finished =
          (await server.settled(Math.max(0, until - Date.now()))) && ((await vehicles?.settled(Math.max(0, until - Date.now()))) ?? true);
        log.info("drained", { published, callsFinished: finished, unacked: batcher.inFlight });
        await close();
      },
      close,
    };
  } catch (err) {
    for (const t of timers) clearInterval(t);
    await follower?.stop().catch(() => {});
    await nats.close().catch(() => {});
    throw err;
  }
}
