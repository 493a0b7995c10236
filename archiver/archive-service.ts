/**
 * ArchiveService: ListPartitions (hot and archived days) and RunArchive (streams the progress of a
 * run). Admin tokens only.
 */
import { create } from "@bufbuild/protobuf";
import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  ArchiveService,
  PartitionSchema,
  PartitionState,
  type ListPartitionsResponse,
  type RunArchiveResponse,
} from "../gen/fleet/v1/archive_pb";
import { archiveDays, hotDays, partitionName, timescaleSchema, timescaleDayRows, type Sql, type StorageMode } from "../lib/storage";
import { claimsOf, InvalidRequestError, PermissionError, UnavailableError } from "../lib/grpc";
import { ArchiveBusyError, type ArchiveProgress } from "./archive-run";

export interface ArchiveServiceOptions {
  sql: Sql;
  mode: StorageMode;
  /** Runs the archive with a cutoff (ms), reporting progress. */
  run(cutoffMs: number, onProgress: (p: ArchiveProgress) => void): Promise<unknown>;
  /** Hot retention in ms (the default cutoff is now minus it). */
  hotRetentionMs: number;
}

const STATE = { writing: PartitionState.ARCHIVING, written: PartitionState.ARCHIVING, archived: PartitionState.ARCHIVED } as const;

function requireAdmin(ctx: HandlerContext) {
  if (claimsOf(ctx).role !== "admin") throw new PermissionError("archive calls need an admin token (`fleet token watch --admin`)");
}

/** Latest seconds a Timestamp holds (9999-12-31T23:59:59Z). */
const MAX_SECONDS = 253_402_300_799;

/**
 * older_than as ms, refused when it is in the future: days that have not ended yet (today, still
 * written to) would be archived and their partitions dropped under the writer.
 */
function checkOlderThan(t: Timestamp): number {
  const seconds = Number(t.seconds);
  if (!(seconds >= 0 && seconds <= MAX_SECONDS) || !(t.nanos >= 0 && t.nanos <= 999_999_999)) {
    throw new InvalidRequestError(
      `older_than (seconds ${t.seconds}, nanos ${t.nanos}) is out of range: send a time after 1970 and before now`,
    );
  }
  const ms = timestampMs(t);
  const now = Date.now();
  if (ms > now) {
    throw new InvalidRequestError(
      `older_than ${new Date(ms).toISOString()} is in the future (now ${new Date(now).toISOString()}): only days that have ended can be archived; send a past time, or none for the hot retention`,
    );
  }
  return ms;
}

export function createArchiveService({ sql, mode, run, hotRetentionMs }: ArchiveServiceOptions): ServiceImpl<typeof ArchiveService> {
  return {
    async listPartitions(_req, ctx): Promise<ListPartitionsResponse> {
      requireAdmin(ctx);
      const hot = await hotDays(sql, mode);
      // Row counts of hot days are the planner's estimates (an exact count of a big day is a full scan).
      const estimates = new Map<string, number>();
      if (mode === "plain" && hot.length) {
        const rows = await sql`SELECT relname, greatest(reltuples, 0)::int8 AS n FROM pg_class
                               WHERE relname = ANY(${hot.map(partitionName)}::text[]) AND relnamespace = current_schema()::regnamespace`;
        for (const r of rows) estimates.set(r.relname as string, Number(r.n));
      } else if (mode === "timescale" && hot.length) {
        // A day's chunks' statistics, compressed ones included (approximate_row_count), under the partition's name.
        const ts = await timescaleSchema(sql);
        if (ts) for (const [day, n] of await timescaleDayRows(sql, ts)) estimates.set(partitionName(day), n);
      }
      const byDay = new Map<string, ListPartitionsResponse["partitions"][number]>();
      for (const d of await archiveDays(sql)) {
        byDay.set(
          d.day,
          create(PartitionSchema, {
            day: d.day,
            state: STATE[d.state],
            rows: BigInt(d.rows),
            bytes: BigInt(d.bytes),
            location: d.location,
          }),
        );
      }
      for (const day of hot) {
        const seen = byDay.get(day);
        if (seen && seen.state !== PartitionState.ARCHIVED) continue;
        // A hot day, or late points of an archived day waiting for its next generation.
        byDay.set(
          day,
          create(PartitionSchema, {
            day,
            state: PartitionState.HOT,
            rows: BigInt(estimates.get(partitionName(day)) ?? 0),
          }),
        );
      }
      return create(ArchiveService.method.listPartitions.output, { partitions: [...byDay.keys()].sort().map((d) => byDay.get(d)!) });
    },

    async *runArchive(req, ctx): AsyncGenerator<RunArchiveResponse> {
      requireAdmin(ctx);
      const cutoffMs = req.olderThan ? checkOlderThan(req.olderThan) : Date.now() - hotRetentionMs;
      const queue: RunArchiveResponse[] = [];
      let wake: (() => void) | undefined;
      let done = false;
      let failure: unknown;
      run(cutoffMs, (p) => {
        queue.push(
          create(ArchiveService.method.runArchive.output, {
            partition: { day: p.day, state: STATE[p.state], rows: BigInt(p.rows), bytes: BigInt(p.bytes), location: p.location },
            rowsDone: BigInt(p.rowsDone),
            step: p.step,
          }),
        );
        wake?.();
      }).then(
        () => {
          done = true;
          wake?.();
        },
        (err) => {
          failure = err;
          done = true;
          wake?.();
        },
      );
      for (;;) {
        while (queue.length) yield queue.shift()!;
        if (done) break;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
      while (queue.length) yield queue.shift()!;
      if (failure instanceof ArchiveBusyError) throw new UnavailableError(failure.message, { cause: failure });
      if (failure) {
        throw new UnavailableError(
          `archive run stopped: ${failure instanceof Error ? failure.message : String(failure)}; nothing was dropped that was not read back, run again to finish`,
          { cause: failure },
        );
      }
    },
  };
}
