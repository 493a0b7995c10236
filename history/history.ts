/**
 * The history service assembled: PostgreSQL (migrations, partitions ahead), the JetStream writer,
 * the readers of PostgreSQL and the archive, and HistoryService on the one-port server.
 * `main.ts` runs it as a process; tests create it in-process.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { HistoryService } from "../gen/fleet/v1/history_pb";
import {
  openDuckDb,
  archiveStoreFrom,
  defaultCacheDir,
  connectPostgres,
  lockKey,
  migrate,
  uncompressedChunks,
  type Sql,
  type StorageMode,
} from "../lib/storage";
import { tokenKeys } from "../lib/auth";
import type { Config } from "../lib/config";
import { nativeUnaryMethods, createAuthInterceptor, createRpcInterceptor, serve, type Server } from "../lib/grpc";
import { connectNats, ensurePositionsStream, positionsStreamSettings, CONSUMERS, POSITIONS_STREAM, type Nats } from "../lib/nats";
import { createLeader, postgresLock, type Leader } from "../lib/leader";
import { createLogger, type Logger } from "../lib/log";
import { createRegistry, Gauge, type Registry } from "../lib/metrics";
import { startHistoryConsumer, type HistoryConsumer } from "./consumer";
import { createHistoryService } from "./history-service";
import { createPositionReader } from "./read-positions";
import { createTrackPacker } from "./track-hours";
import { createPositionWriter, type PositionWriter } from "./write-positions";

export interface HistoryOptions {
  config: Config;
  log?: Logger;
  registry?: Registry;
  /** Stream and durable consumer (tests use their own). */
  stream?: string;
  durable?: string;
  /** Subjects of the stream when this process creates it (tests). */
  subjectPrefix?: string;
  /** Skip the JetStream writer (query-only instance). */
  consume?: boolean;
}

export interface History {
  readonly url: string;
  readonly port: number;
  /** Admin address of /metrics and /healthz (loopback by default). */
  readonly adminUrl: string;
  readonly registry: Registry;
  readonly sql: Sql;
  readonly mode: StorageMode;
  /** This instance's hold on the jobs that run once (track packing, partitions ahead). */
  readonly leader: Leader;
  /** Stops consuming (the transaction in flight commits and is acked), then closes everything. */
  close(): Promise<void>;
}

/** Starts the history service; resolves once it listens. */
export async function createHistory({
  config,
  log = createLogger({ level: config.logLevel, fields: { service: "history" } }),
  registry = createRegistry("history"),
  stream = POSITIONS_STREAM,
  durable = CONSUMERS.history,
  subjectPrefix,
  consume = true,
}: HistoryOptions): Promise<History> {
  const instanceId = `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  // Three pools: a query (a Replay page, a GetTrack) never waits behind a write, and the writer never
  // waits behind readers, whatever number of them is open, nor behind track packing. The writer's
  // pool is its own (write-positions.ts) so that it can replace it after a write that hung.
  const sql = connectPostgres({
    url: config.databaseUrl,
    schema: config.historySchema,
    max: 2, // migrations; track packing (a connection holding its lock, one packing)
    applicationName: `history jobs ${instanceId}`,
  });
  const readSql = connectPostgres({
    url: config.databaseUrl,
    schema: config.historySchema,
    max: config.historyReadConnections,
    applicationName: `history reader ${instanceId}`,
  });
  let nats: Nats | undefined;
  let consumer: HistoryConsumer | undefined;
  let server: Server | undefined;
  const timers: ReturnType<typeof setInterval>[] = [];
  /** The track packer's run in progress, if any. */
  let packing: Promise<unknown> | undefined;
  let leader: Leader | undefined;
  let writer: PositionWriter | undefined;
  const duck = await openDuckDb();
  try {
    const mode = await migrate(sql, { schema: config.historySchema, log, timescale: config.historyTimescale });
    const positions = createPositionWriter({
      connect: () =>
        connectPostgres({
          url: config.databaseUrl,
          schema: config.historySchema,
          max: config.historyWriteConnections,
          applicationName: `history ${instanceId}`, // as chaos/ and scale-out.test.ts find the writer's transactions
        }),
      deadlineMs: config.historyWriteTimeout,
      mode,
      schema: config.historySchema,
      packDelayMs: config.trackPackDelay,
    });
    writer = positions;
    // Partitions ahead and track packing run in one instance, the leader (lib/leader.ts); the writer
    // of every instance still creates a missing day's partition on demand.
    const ensureAhead = () =>
      positions.ensureAhead(config.historyPartitionsAhead).then(
        (created) => created.length && log.info("partitions created", { days: created }),
        (err) => log.warn("could not create partitions ahead", { err }),
      );
    leader = createLeader({
      name: "history",
      ...postgresLock({
        url: config.databaseUrl,
        key: lockKey(`fleet-leader:history:${config.historySchema}`),
        applicationName: `history leader ${instanceId}`,
      }),
      intervalMs: config.leaderInterval,
      log,
      registry,
      onLeader: ensureAhead,
    });
    const lead = leader;
    timers.push(
      setInterval(() => {
        if (lead.isLeader()) ensureAhead();
      }, 3_600_000),
    );

    if (mode === "timescale") {
      // TimescaleDB's background jobs fail on PostgreSQL 15.20 (lib/storage/timescale-chunks.ts): the
      // compression policy may do nothing, so its backlog is shown here (`fleet compress` clears it).
      // Not exported in plain mode, where nothing is compressed.
      let failing = false;
      new Gauge({
        name: "history_uncompressed_chunks",
        help: "chunks of positions older than the compression delay and not compressed (NaN when they could not be read); run `fleet compress` when above 0",
        registers: [registry],
        async collect() {
          try {
            this.set((await uncompressedChunks(readSql)).chunks.length);
            failing = false;
          } catch (err) {
            this.set(Number.NaN);
            if (!failing) log.warn("could not read the uncompressed chunks for history_uncompressed_chunks", { err });
            failing = true;
          }
        },
      });
    }

    if (consume) {
      if (!config.natsUrl) throw new Error("NATS_URL is empty: the history writer needs NATS JetStream");
      nats = await connectNats({
        url: config.natsUrl,
        name: `history ${instanceId}`,
        log,
        registry,
        pingIntervalMs: config.natsPingInterval,
      });
      await ensurePositionsStream(nats.jsm, {
        ...positionsStreamSettings(config),
        log,
        stream,
        subjects: subjectPrefix ? `${subjectPrefix}>` : undefined,
      });
      consumer = await startHistoryConsumer({
        nats,
        writer: positions,
        writeDeadlineMs: config.historyWriteTimeout,
        registry,
        log,
        stream,
        durable,
        maxRows: config.historyBatchRows,
        writers: config.historyWriters,
        batchDelayMs: config.historyBatchDelay,
      });
    }

    if (config.trackPackInterval > 0) {
      const packer = createTrackPacker({ sql, mode, schema: config.historySchema, delayMs: config.trackPackDelay, log, registry });
      const pack = () => {
        if (!lead.isLeader()) return;
        packing ??= packer
          .run()
          .catch((err) => log.warn("could not pack track hours: the next run retries", { err }))
          .finally(() => (packing = undefined));
      };
      // Not at start: a restarted history first catches up with JetStream, and the packer's first
      // walk over the hours would compete with the writer for PostgreSQL then.
      timers.push(setInterval(pack, config.trackPackInterval));
    }

    let archive;
    try {
      archive = { store: archiveStoreFrom(config), cacheDir: config.archiveCacheDir || defaultCacheDir(), connect: duck.connect };
    } catch {
      log.warn("no archive configured (ARCHIVE_DIR or S3_ENDPOINT): archived days read as empty");
    }
    const reader = createPositionReader({ sql: readSql, archive });
    const service = createHistoryService({
      sql: readSql,
      reader,
      limits: {
        trackMaxRangeMs: config.trackMaxRange,
        replayMaxRangeMs: config.replayMaxRange,
        trackDefaultPoints: config.trackPoints,
        trackMaxPoints: config.trackMaxPoints,
        maxAreaRadiusM: config.maxAreaRadius,
        maxResponseBytes: config.maxMessageBytes,
        replaysMax: config.replaysMax,
        replaysPerToken: config.replaysPerToken,
      },
    });
    server = await serve({
      routes: (router) => router.service(HistoryService, service),
      // GetTrack and GetStats over gRPC skip connect-node's per-call cost (~0.3 ms of CPU on Bun): see lib/grpc/router.ts.
      nativeMethods: nativeUnaryMethods(HistoryService, service),
      host: config.host,
      port: config.historyPort,
      admin: { host: config.adminHost, port: config.historyAdminPort },
      registry,
      log,
      maxMessageBytes: config.maxMessageBytes,
      maxStreamsPerConnection: config.maxStreamsPerConnection,
      maxConnections: config.maxConnections,
      headersTimeoutMs: config.headersTimeout,
      unaryBodyTimeoutMs: config.unaryBodyTimeout,
      idleTimeoutMs: config.idleTimeout,
      healthz: () => (nats ? nats.connected() : true) && (consumer ? consumer.healthy() : true),
      interceptors: [createRpcInterceptor({ log, registry }), createAuthInterceptor(tokenKeys(config))],
    });
    log.info("listening", { url: server.url, mode, schema: config.historySchema, instanceId });

    let closed: Promise<void> | undefined;
    const srv = server;
    return {
      url: srv.url,
      port: srv.port,
      adminUrl: srv.adminUrl,
      registry,
      sql,
      mode,
      leader: lead,
      close: () =>
        (closed ??= (async () => {
          for (const t of timers) clearInterval(t);
          await consumer?.stop();
          await packing;
          await lead.close();
          await srv.close();
          await nats?.close();
          await Promise.all([positions.close({ timeout: 5 }), sql.end({ timeout: 5 }), readSql.end({ timeout: 5 })]);
          duck.close();
        })()),
    };
  } catch (err) {
    for (const t of timers) clearInterval(t);
    await leader?.close().catch(() => {});
    await consumer?.stop().catch(() => {});
    await server?.close().catch(() => {});
    await nats?.close().catch(() => {});
    await writer?.close({ timeout: 1 }).catch(() => {});
    await sql.end({ timeout: 1 }).catch(() => {});
    await readSql.end({ timeout: 1 }).catch(() => {});
    duck.close();
    throw err;
  }
}
