/**
 * The archiver assembled: PostgreSQL (the same migrations as history), the archive store, DuckDB,
 * a run every ARCHIVE_INTERVAL, and ArchiveService on the one-port server.
 */
import { ArchiveService } from "../gen/fleet/v1/archive_pb";
import { openDuckDb, archiveStoreFrom, connectPostgres, archiveDays, lockKey, migrate, type ArchiveStore, type Sql } from "../lib/storage";
import { tokenKeys } from "../lib/auth";
import type { Config } from "../lib/config";
import { createLeader, postgresLock, type Leader } from "../lib/leader";
import { createLogger, type Logger } from "../lib/log";
import { Counter, Gauge, createRegistry, type Registry } from "../lib/metrics";
import { createAuthInterceptor, createRpcInterceptor, serve, type Server } from "../lib/grpc";
import { ArchiveBusyError, runArchive, type ArchiveProgress, type ArchiveRunResult } from "./archive-run";
import { createArchiveService } from "./archive-service";

export interface ArchiverOptions {
  config: Config;
  log?: Logger;
  registry?: Registry;
  /** Another store than the configured one (tests). */
  store?: ArchiveStore;
}

export interface Archiver {
  readonly url: string;
  readonly port: number;
  /** Admin address of /metrics and /healthz (loopback by default). */
  readonly adminUrl: string;
  readonly registry: Registry;
  readonly sql: Sql;
  readonly store: ArchiveStore;
  /** This instance's hold on the timed runs (one archiver runs them; RunArchive works on any, one at a time). */
  readonly leader: Leader;
  /** One run with a cutoff (default now minus HISTORY_HOT_RETENTION). */
  run(cutoffMs?: number, onProgress?: (p: ArchiveProgress) => void): Promise<ArchiveRunResult>;
  close(): Promise<void>;
}

export async function createArchiver({
  config,
  log = createLogger({ level: config.logLevel, fields: { service: "archiver" } }),
  registry = createRegistry("archiver"),
  store = archiveStoreFrom(config),
}: ArchiverOptions): Promise<Archiver> {
  const sql = connectPostgres({ url: config.databaseUrl, schema: config.historySchema, max: 4, applicationName: "archiver" });
  const duck = await openDuckDb();
  let server: Server | undefined;
  let timer: ReturnType<typeof setInterval> | undefined;
  let leader: Leader | undefined;
  try {
    const mode = await migrate(sql, { schema: config.historySchema, log, timescale: config.historyTimescale });
    const runs = new Counter({
      name: "archive_runs_total",
      help: "archive runs, by result",
      labelNames: ["result"],
      registers: [registry],
    });
    const rowsArchived = new Counter({
      name: "archive_rows_total",
      help: "rows moved to Parquet and dropped from PostgreSQL",
      registers: [registry],
    });
    const bytesWritten = new Counter({ name: "archive_bytes_written_total", help: "bytes of Parquet written", registers: [registry] });
    new Gauge({
      name: "archive_days",
      help: "days known to the archiver, by state",
      labelNames: ["state"],
      registers: [registry],
      async collect() {
        this.reset();
        for (const d of await archiveDays(sql).catch(() => [])) this.inc({ state: d.state });
      },
    });

    const run = async (cutoffMs = Date.now() - config.hotRetention, onProgress?: (p: ArchiveProgress) => void) => {
      let lastLog = 0;
      try {
        const r = await runArchive({
          sql,
          mode,
          store,
          connect: duck.connect,
          cutoffMs,
          schema: config.historySchema,
          log,
          onProgress: (p) => {
            if (p.step === "write" && p.rowsDone < p.rows && Date.now() - lastLog > 5000) {
              lastLog = Date.now();
              log.info("archive: writing", { day: p.day, rowsDone: p.rowsDone });
            }
            if (p.step === "drop") rowsArchived.inc(p.rows);
            if (p.step === "write" && p.state === "written") bytesWritten.inc(p.bytes);
            onProgress?.(p);
          },
        });
        runs.inc({ result: "ok" });
        return r;
      } catch (err) {
        runs.inc({ result: err instanceof ArchiveBusyError ? "busy" : "failed" });
        throw err;
      }
    };

    server = await serve({
      routes: (router) => router.service(ArchiveService, createArchiveService({ sql, mode, run, hotRetentionMs: config.hotRetention })),
      host: config.host,
      port: config.archiverPort,
      admin: { host: config.adminHost, port: config.archiverAdminPort },
      registry,
      log,
      maxMessageBytes: config.maxMessageBytes,
      maxStreamsPerConnection: config.maxStreamsPerConnection,
      maxConnections: config.maxConnections,
      headersTimeoutMs: config.headersTimeout,
      unaryBodyTimeoutMs: config.unaryBodyTimeout,
      idleTimeoutMs: config.idleTimeout,
      interceptors: [createRpcInterceptor({ log, registry }), createAuthInterceptor(tokenKeys(config))],
    });
    // Timed runs in one archiver, the leader: the others' runs would only find the lock taken (busy).
    leader = createLeader({
      name: "archive",
      ...postgresLock({
        url: config.databaseUrl,
        key: lockKey(`fleet-leader:archive:${config.historySchema}`),
        applicationName: `archiver leader ${process.pid}`,
      }),
      intervalMs: config.leaderInterval,
      log,
      registry,
    });
    const lead = leader;
    if (config.archiveInterval > 0) {
      timer = setInterval(() => {
        if (!lead.isLeader()) return;
        run().then(
          (r) => r.days.length && log.info("archive run done", { ...r }),
          (err) => log.warn("archive run failed: the next one retries", { err }),
        );
      }, config.archiveInterval);
    }
    log.info("listening", { url: server.url, archive: store.root, mode, retention: config.hotRetention });
    const srv = server;
    return {
      url: srv.url,
      port: srv.port,
      adminUrl: srv.adminUrl,
      registry,
      sql,
      store,
      run,
      leader: lead,
      async close() {
        if (timer) clearInterval(timer);
        await lead.close();
        await srv.close();
        await sql.end({ timeout: 5 });
        duck.close();
      },
    };
  } catch (err) {
    if (timer) clearInterval(timer);
    await leader?.close().catch(() => {});
    await server?.close().catch(() => {});
    await sql.end({ timeout: 1 }).catch(() => {});
    duck.close();
    throw err;
  }
}
