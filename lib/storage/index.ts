/**
 * Storage for the services: PostgreSQL (pg.ts: pool, COPY, binary COPY rows), the positions
 * tables and their day partitions or TimescaleDB chunks (positions-db.ts, timescale-chunks.ts),
 * and the Parquet archive on S3 or a folder, read through DuckDB (archive-store.ts, archive-duckdb.ts).
 */
export { EXPORT_SELECT, FILE_COLUMNS, FILE_SELECT, openDuckDb, parquetSource, positionsViewSql, sqlString } from "./archive-duckdb";
export { archiveStoreFrom, createDirStore, defaultCacheDir, localParquetFiles, objectKey, type ArchiveStore } from "./archive-store";
export {
  BINARY_COPY_SIGNATURE,
  PG_EPOCH_US,
  binaryCopyHeaderEnd,
  binaryCopyRows,
  binaryCopySingleValue,
  checkSchemaName,
  connectPostgres,
  copyFailuresReported,
  copyFrom,
  copyOutToBuffer,
  guardPostgresClosedSocketWrite,
  isDataException,
  isTransientPgError,
  lockKey,
  type Sql,
  type TransactionSql,
} from "./pg";
export {
  COMPRESS_AFTER,
  DAY_MS,
  archiveDays,
  archivedDaysBetween,
  chooseStorage,
  dayOf,
  dayStartMs,
  ensureDayPartitions,
  hotDays,
  migrate,
  partitionName,
  storageMode,
  timescaleFacts,
  timescaleSchema,
  type DayState,
  type StorageMode,
} from "./positions-db";
export { compressChunk, timescaleDayRows, uncompressedChunks } from "./timescale-chunks";
