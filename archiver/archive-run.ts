/**
 * One archive run: every closed day partition older than the cutoff goes to Parquet, is read back,
 * and only then dropped. Each day moves through states kept in `archive_days`, so that a run killed
 * at any step is completed by the next one with nothing lost and nothing doubled:
 *
 *   (hot) ──write──► writing ──upload done──► written ──read back, rows match, DROP──► archived
 *
 * - writing: the object is (re)written under a key fixed by the day and its generation, so a retry
 *   overwrites a half-done upload instead of adding a second object.
 * - written: the object is fetched again and counted by DuckDB; in one transaction the partition is
 *   locked (no insert can slip in), counted, and dropped only if the counts match. A mismatch (points
 *   that arrived late) sends the day back to writing.
 * - archived: a partition of that day that appears again (late points) is archived as the next
 *   generation (part-<n+1>.parquet).
 *
 * Days overlap by one step: once a day is exported, the next day's export (read-only: it changes no
 * state) starts beside its Parquet, upload and read-back, and is done before the day is dropped.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DuckDBConnection } from "@duckdb/node-api";
import {
  objectKey,
  checkSchemaName,
  lockKey,
  archiveDays,
  DAY_MS,
  dayStartMs,
  hotDays,
  partitionName,
  timescaleSchema,
  type ArchiveStore,
  type Sql,
  type DayState,
  type StorageMode,
} from "../lib/storage";
import type { Logger } from "../lib/log";
import { dayConditions, exportDayParts, parquetRows, plainToParquet } from "./parquet-writer";

export type ArchiveStep = "write" | "verify" | "drop" | "skip";

export interface ArchiveProgress {
  day: string;
  state: DayState;
  step: ArchiveStep;
  rowsDone: number;
  rows: number;
  bytes: number;
  location: string;
}

export interface ArchiveRunOptions {
  sql: Sql;
  mode: StorageMode;
  store: ArchiveStore;
  connect(): Promise<DuckDBConnection>;
  /** Days whose end is at or before this time (ms) are archived. */
  cutoffMs: number;
  schema?: string;
  log: Logger;
  onProgress?: (p: ArchiveProgress) => void;
  /** Page ranges of a day exported at once (PostgreSQL formats each COPY on one core). */
  exportParts?: number;
}

export interface ArchiveRunResult {
  days: string[];
  rows: number;
  bytes: number;
}

/** Thrown when another archive run holds the lock. */
export class ArchiveBusyError extends Error {
  constructor() {
    super("another archive run is in progress: wait for it to finish");
    this.name = "ArchiveBusyError";
  }
}

/** Runs the archive once; throws on the first day that fails (its partition stays). */
export async function runArchive({
  sql,
  mode,
  store,
  connect,
  cutoffMs,
  schema = "public",
  log,
  onProgress = () => {},
  exportParts = 2,
}: ArchiveRunOptions): Promise<ArchiveRunResult> {
  const lock = await sql.reserve();
  const key = lockKey(`fleet-archive:${schema}`).toString();
  try {
    const [got] = await lock`SELECT pg_try_advisory_lock(${key}::bigint) AS ok`;
    if (!got?.ok) throw new ArchiveBusyError();
    try {
      const result: ArchiveRunResult = { days: [], rows: 0, bytes: 0 };
      const states = new Map((await archiveDays(sql)).map((d) => [d.day, d]));
      // Days in progress first (a killed run's), then closed hot days, oldest first.
      const all = await hotDays(sql, mode);
      const hot = all.filter((d) => dayStartMs(d) + DAY_MS <= cutoffMs);
      const pending = [...states.values()].filter((d) => d.state !== "archived").map((d) => d.day);
      const days = [...new Set([...pending, ...hot])].sort();
      // The next day's export (PostgreSQL's work) runs while this day is sorted into Parquet,
      // uploaded and read back (DuckDB's and the store's), once this day's own export is done.
      let ahead: Export | undefined;
      try {
        for (let i = 0; i < days.length; i++) {
          const day = days[i]!;
          const next = days[i + 1];
          const mine = ahead?.day === day ? ahead : undefined;
          ahead = undefined;
          const exportNext = () => {
            if (next && all.includes(next) && states.get(next)?.state !== "written") ahead = startExport(sql, mode, next, exportParts);
          };
          const r = await archiveDay(
            { sql, mode, store, connect, log, onProgress, exportParts, schema },
            day,
            all.includes(day),
            mine,
            exportNext,
            () => ahead?.done,
          );
          if (r) {
            result.days.push(day);
            result.rows += r.rows;
            result.bytes += r.bytes;
          }
        }
      } finally {
        // A day failed (or the next one was never reached): the export made ahead is not needed.
        if (ahead) await ahead.discard();
      }
      return result;
    } finally {
      await lock`SELECT pg_advisory_unlock(${key}::bigint)`.catch(() => {});
    }
  } finally {
    lock.release();
  }
}

type DayContext = Pick<ArchiveRunOptions, "sql" | "mode" | "store" | "connect" | "log"> & {
  onProgress: (p: ArchiveProgress) => void;
  exportParts: number;
  schema: string;
};

/** A day's rows exported to plain Parquet files in a folder of their own (exportDayParts), started ahead of its turn. */
interface Export {
  day: string;
  work: string;
  /** Settles when the export is done (it never rejects; `result` does). */
  done: Promise<void>;
  result: Promise<{ files: string[]; rows: number; ms: number }>;
  discard(): Promise<void>;
}

/** Its progress is not reported: the day is reported when its turn comes. */
function startExport(sql: Sql, mode: StorageMode, day: string, parts: number): Export {
  const work = mkdtempSync(join(tmpdir(), "fleet-archive-"));
  const t0 = performance.now();
  const result = exportDayParts(sql, mode, day, work, parts).then((r) => ({ ...r, ms: performance.now() - t0 }));
  const done = result.then(
    () => {},
    () => {},
  );
  return {
    day,
    work,
    done,
    result,
    async discard() {
      await done;
      rmSync(work, { recursive: true, force: true });
    },
  };
}

/**
 * Archives one day. `ahead`: its export, already started (used for the first write, if the day is
 * to be written). `exported`: called once this day no longer needs PostgreSQL for its export (the
 * next day's may start). `beforeDrop`: awaited before the partition is locked and dropped, so that
 * no export runs beside the drop.
 */
async function archiveDay(
  ctx: DayContext,
  day: string,
  isHot: boolean,
  ahead?: Export,
  exported: () => void = () => {},
  beforeDrop: () => Promise<void> | undefined = () => undefined,
): Promise<{ rows: number; bytes: number } | undefined> {
  try {
    return await archiveDayOnce(ctx, day, isHot, ahead, exported, beforeDrop);
  } finally {
    await ahead?.discard();
  }
}

async function archiveDayOnce(
  { sql, mode, store, connect, log, onProgress, exportParts, schema }: DayContext,
  day: string,
  isHot: boolean,
  ahead: Export | undefined,
  exported: () => void,
  beforeDrop: () => Promise<void> | undefined,
): Promise<{ rows: number; bytes: number } | undefined> {
  let exportedCalled = false;
  const exportDone = () => {
    if (exportedCalled) return;
    exportedCalled = true;
    exported();
  };
  let [row] = await sql`SELECT state, generation, rows, bytes FROM archive_days WHERE day = ${day}::date`;
  if (!row) {
    if (!isHot) return (exportDone(), undefined);
    [row] =
      await sql`INSERT INTO archive_days (day, state, generation) VALUES (${day}::date, 'writing', 0) RETURNING state, generation, rows, bytes`;
  } else if (row.state === "archived") {
    if (!isHot) return (exportDone(), undefined);
    // Late points re-opened the day: archive them as the next generation.
    [row] = await sql`UPDATE archive_days SET state = 'writing', generation = generation + 1, rows = 0, bytes = 0, updated_at = now()
                      WHERE day = ${day}::date RETURNING state, generation, rows, bytes`;
  }
  const generation = Number(row!.generation);
  const key = objectKey(day, generation);
  const location = store.root + key;
  let state = row!.state as DayState;
  let rows = Number(row!.rows);
  let bytes = Number(row!.bytes);
  const report = (step: ArchiveStep, rowsDone: number) => onProgress({ day, state, step, rowsDone, rows, bytes, location });
  const work = mkdtempSync(join(tmpdir(), "fleet-archive-"));
  let timings = {};
  const conn = await connect();
  try {
    for (let round = 0; round < 3; round++) {
      if (state === "writing") {
        if (!isHot) {
          // The partition is gone although the day never got past writing: only a hand-made drop does that.
          throw new Error(`day ${day} is marked writing but has no partition: check archive_days and the archive at ${location}`);
        }
        const parquet = join(work, "day.parquet");
        const t0 = performance.now();
        // The export started ahead, on the first round only: a rewrite needs the rows as they are now.
        const early =
          round === 0
            ? await ahead?.result.catch(
                (err) => (log.warn("archive: the export made ahead failed: exporting again", { day, err }), undefined),
              )
            : undefined;
        const exported = early ?? (await exportDayParts(sql, mode, day, work, exportParts, (n) => report("write", n)));
        const exportMs = early ? early.ms : performance.now() - t0;
        exportDone();
        rows = exported.rows;
        const t1 = performance.now();
        bytes = 0;
        if (rows > 0) {
          await plainToParquet(conn, exported.files, parquet);
          // The rows are what DuckDB wrote (read back from the file it made).
          rows = await parquetRows(conn, parquet);
        }
        const t2 = performance.now();
        if (rows > 0) bytes = await store.put(key, parquet);
        timings = { exportMs: Math.round(exportMs), parquetMs: Math.round(t2 - t1), uploadMs: Math.round(performance.now() - t2) };
        for (const f of exported.files) rmSync(f, { force: true });
        await sql`UPDATE archive_days SET state = 'written', rows = ${rows}, bytes = ${bytes}, location = ${location}, updated_at = now() WHERE day = ${day}::date`;
        state = "written";
        report("write", rows);
        log.info("archive: day written", { day, generation, rows, bytes, location, ...timings });
      }
      exportDone();
      // written: read the object back, then drop the partition if the counts match.
      let archived = 0;
      const tv = performance.now();
      if (rows > 0) {
        const back = join(work, "back.parquet");
        await store.fetch(key, back).catch((err) => {
          throw new Error(`could not read back ${location}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
        });
        archived = await parquetRows(conn, back);
        rmSync(back, { force: true });
      }
      report("verify", archived);
      const verifyMs = Math.round(performance.now() - tv);
      if (archived !== rows) {
        log.warn("archive: object does not hold the rows written: rewriting", { day, expected: rows, found: archived });
        await sql`UPDATE archive_days SET state = 'writing', updated_at = now() WHERE day = ${day}::date`;
        state = "writing";
        continue;
      }
      await beforeDrop();
      const td = performance.now();
      const dropped = await sql.begin(async (tx) => {
        let inPostgres = 0;
        if (isHot) {
          if (mode === "plain") await tx.unsafe(`LOCK TABLE ${partitionName(day)} IN ACCESS EXCLUSIVE MODE`);
          else await tx.unsafe(`LOCK TABLE positions IN SHARE ROW EXCLUSIVE MODE`);
          const [c] = await tx.unsafe(
            // The same conditions as the export's: the count is of the rows that were archived.
            `SELECT count(*)::int8 AS n FROM positions WHERE ${dayConditions(day).join(" AND ")}`,
          );
          inPostgres = Number(c!.n);
        }
        if (inPostgres !== archived) return false;
        if (isHot) {
          if (mode === "plain") await tx.unsafe(`DROP TABLE ${partitionName(day)}`);
          else {
            // Qualified with the extension's schema: the session sees only the service's (lib/storage/pg.ts).
            const ts = await timescaleSchema(tx);
            if (!ts)
              throw new Error("positions is a hypertable but the timescaledb extension is not created: CREATE EXTENSION timescaledb");
            await tx.unsafe(
              `SELECT ${ts}.drop_chunks('${checkSchemaName(schema)}.positions', older_than => '${day}'::timestamptz + interval '1 day', newer_than => '${day}'::timestamptz)`,
            );
          }
        }
        // GetTrack's packed hours of the day go with its rows (history/track-hours.ts).
        await tx`DELETE FROM track_hours WHERE hour >= ${day}::timestamptz AND hour < ${day}::timestamptz + interval '1 day'`;
        await tx`DELETE FROM track_dirty WHERE hour >= ${day}::timestamptz AND hour < ${day}::timestamptz + interval '1 day'`;
        await tx`UPDATE archive_days SET state = 'archived', updated_at = now() WHERE day = ${day}::date`;
        return true;
      });
      if (!dropped) {
        log.info("archive: more rows arrived for the day since it was written: rewriting", { day });
        await sql`UPDATE archive_days SET state = 'writing', updated_at = now() WHERE day = ${day}::date`;
        state = "writing";
        continue;
      }
      state = "archived";
      report("drop", rows);
      log.info("archive: day archived and dropped", { day, generation, rows, bytes, verifyMs, dropMs: Math.round(performance.now() - td) });
      return { rows, bytes };
    }
    throw new Error(`day ${day} kept changing while it was archived; try again later`);
  } finally {
    conn.closeSync();
    rmSync(work, { recursive: true, force: true });
  }
}
