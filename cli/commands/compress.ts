/** `fleet compress`: compresses by hand the TimescaleDB chunks that the compression policy left behind. */
import { parseArgs } from "node:util";
import { COMPRESS_AFTER, storageMode, timescaleSchema, connectPostgres, compressChunk, uncompressedChunks } from "../../lib/storage";
import { loadConfig, parseDuration } from "../../lib/config";

const help = `usage: fleet compress [--older-than DURATION] [--dry-run]

Compresses the chunks of the positions hypertable whose time range ended longer ago than the
compression delay and that are not compressed yet, one chunk per transaction, printing a line for
each. For TimescaleDB mode only (see HISTORY_TIMESCALE); with plain day partitions there is nothing
to compress and the command says so.

Why: on PostgreSQL 15.20 every TimescaleDB background job fails ("cannot drop portal "" while it is
being set up"), the compression policy included, while the same call made by hand works. The
history service's metric history_uncompressed_chunks counts what this command would compress.

  --older-than D   compress chunks that ended more than D ago (250ms, 30s, 5m, 2h, 7d); default:
                   the compression policy's compress_after (${COMPRESS_AFTER} when it is gone)
  --dry-run        list the chunks, compress nothing

Uses DATABASE_URL and HISTORY_DB_SCHEMA. The same by hand, in psql, for HISTORY_DB_SCHEMA public
(qualify compress_chunk with the extension's schema: timescaledb when history created it):
  SELECT timescaledb.compress_chunk(format('%I.%I', chunk_schema, chunk_name)::regclass, if_not_compressed => true)
  FROM timescaledb_information.chunks
  WHERE hypertable_schema = 'public' AND hypertable_name = 'positions'
    AND NOT is_compressed AND range_end <= now() - interval '${COMPRESS_AFTER}'
  ORDER BY range_start;`;

const at = (d: Date) => d.toISOString().replace(":00.000Z", "Z");

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      help: { type: "boolean", short: "h" },
      "older-than": { type: "string" },
      "dry-run": { type: "boolean" },
    },
  });
  if (values.help) {
    console.log(help);
    return 0;
  }
  if (positionals.length) {
    console.error(`fleet compress: unexpected argument "${positionals[0]}" (see --help)`);
    return 2;
  }
  const delayMs = values["older-than"] === undefined ? undefined : parseDuration(values["older-than"], "--older-than");
  const config = loadConfig();
  const schema = config.historySchema;
  if (!config.databaseUrl) {
    console.error("fleet compress: DATABASE_URL is empty: set it to the PostgreSQL that history writes to");
    return 2;
  }
  const sql = connectPostgres({ url: config.databaseUrl, schema, max: 1, applicationName: "fleet compress" });
  try {
    const [t] = await sql`SELECT to_regclass('history_meta') IS NOT NULL AS migrated`;
    if (!t!.migrated) {
      console.log(`nothing to compress: schema ${schema} holds no history tables yet (history creates them at start)`);
      return 0;
    }
    if ((await storageMode(sql)) !== "timescale") {
      console.log(`nothing to compress: schema ${schema} stores positions in plain day partitions (TimescaleDB is not in use)`);
      return 0;
    }
    const ts = await timescaleSchema(sql);
    if (!ts) {
      console.error(
        `fleet compress: schema ${schema} holds a hypertable but the timescaledb extension is not created: CREATE EXTENSION timescaledb WITH SCHEMA timescaledb`,
      );
      return 1;
    }
    const due = await uncompressedChunks(sql, delayMs);
    const older = `older than ${values["older-than"] ?? due.delay} (ended before ${at(due.cutoff)})`;
    if (due.chunks.length === 0) {
      console.log(`nothing to compress: every chunk of ${schema}.positions ${older} is compressed`);
      return 0;
    }
    const total = due.chunks.length;
    console.log(
      `${values["dry-run"] ? "would compress" : "compressing"} ${total} chunk${total === 1 ? "" : "s"} of ${schema}.positions ${older}`,
    );
    let failed = 0;
    for (const [i, chunk] of due.chunks.entries()) {
      const line = `[${i + 1}/${total}] ${chunk.name} ${at(chunk.rangeStart)} .. ${at(chunk.rangeEnd)}`;
      if (values["dry-run"]) {
        console.log(line);
        continue;
      }
      const started = performance.now();
      try {
        const done = await compressChunk(sql, ts, chunk);
        console.log(
          `${line}: ${done ? `compressed in ${((performance.now() - started) / 1000).toFixed(1)} s` : "gone (dropped meanwhile), skipped"}`,
        );
      } catch (err) {
        failed++;
        console.error(`${line}: failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    if (values["dry-run"]) {
      console.log(`dry run: nothing compressed; run without --dry-run to compress ${total} chunk${total === 1 ? "" : "s"}`);
      return 0;
    }
    if (failed) {
      console.error(`fleet compress: ${failed} of ${total} chunks failed (see above); the others are compressed, run again to retry`);
      return 1;
    }
    console.log(`done: ${total} chunk${total === 1 ? "" : "s"} compressed`);
    return 0;
  } finally {
    await sql.end({ timeout: 5 });
  }
}
