/** `fleet query "<SQL>"`: DuckDB over the Parquet archive, with a `positions` view already defined. */
import { parseArgs } from "node:util";
import { openDuckDb, positionsViewSql, archiveStoreFrom, createDirStore, defaultCacheDir, localParquetFiles } from "../../lib/storage";
import { loadConfig } from "../../lib/config";

const help = `usage: fleet query "<SQL>" [--dir FOLDER] [--day YYYY-MM-DD]... [--json]

Runs SQL with DuckDB over the Parquet archive. A view named "positions" is defined over it:
  vehicle_id, recorded_at (TIMESTAMPTZ, UTC), seq, fleet_id, lat, lon (degrees), speed (m/s),
  heading, accuracy, order_id, status, received_at, day (DATE, from the Hive folder day=YYYY-MM-DD)

Where the archive is: --dir, else ARCHIVE_DIR, else the S3 bucket (S3_ENDPOINT, S3_BUCKET,
ARCHIVE_PREFIX). DuckDB here has no httpfs, so S3 objects are first copied to ARCHIVE_CACHE_DIR
(once per object); --day limits that copy to the days named.

  --json   one JSON object per row instead of a table

Examples:
  fleet query "SELECT day, count(*) FROM positions GROUP BY day ORDER BY day"
  fleet query "SELECT recorded_at, lat, lon FROM positions WHERE vehicle_id = 'truck-9' AND day = '2026-11-10' ORDER BY recorded_at"`;

const show = (v: unknown): string => {
  if (v === null || v === undefined) return "NULL";
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "object" && v !== null && "toString" in v) return String(v);
  return String(v);
};

const json = (v: unknown): unknown =>
  typeof v === "bigint"
    ? Number.isSafeInteger(Number(v))
      ? Number(v)
      : v.toString()
    : v !== null && typeof v === "object"
      ? String(v)
      : v;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      help: { type: "boolean", short: "h" },
      dir: { type: "string" },
      day: { type: "string", multiple: true },
      json: { type: "boolean" },
    },
  });
  const query = positionals.join(" ").trim();
  if (values.help || !query) {
    console.log(help);
    return values.help ? 0 : 2;
  }
  const config = loadConfig();
  const store = values.dir ? createDirStore(values.dir) : archiveStoreFrom(config);
  let files: string[];
  try {
    files = await localParquetFiles(store, config.archiveCacheDir || defaultCacheDir(), values.day);
  } catch (err) {
    const where = store.kind === "s3" ? ` (S3_ENDPOINT ${config.s3Endpoint})` : "";
    console.error(
      `fleet query: could not read the archive at ${store.root}${where}: ${err instanceof Error ? err.message : String(err)}; ` +
        `check that it is reachable and the credentials, or point --dir / ARCHIVE_DIR at a local copy`,
    );
    return 1;
  }
  if (files.length === 0) console.error(`fleet query: note: no Parquet files under ${store.root}positions/ yet; "positions" is empty`);
  const duck = await openDuckDb();
  try {
    const conn = await duck.connect();
    await conn.run(positionsViewSql(files));
    let reader;
    try {
      reader = await conn.runAndReadAll(query);
    } catch (err) {
      console.error(`fleet query: ${err instanceof Error ? err.message : String(err)}`);
      return 1;
    }
    const names = reader.columnNames();
    const rows = reader.getRows();
    if (values.json) {
      for (const r of rows) console.log(JSON.stringify(Object.fromEntries(names.map((n, i) => [n, json(r[i])]))));
      return 0;
    }
    const cells = rows.map((r) => r.map(show));
    const widths = names.map((n, i) => Math.min(60, Math.max(n.length, ...cells.map((c) => c[i]!.length))));
    const line = (c: string[]) =>
      c
        .map((v, i) => v.padEnd(widths[i]!))
        .join(" | ")
        .trimEnd();
    console.log(line(names));
    console.log(widths.map((w) => "-".repeat(w)).join("-+-"));
    for (const c of cells) console.log(line(c));
    console.error(`(${rows.length} row${rows.length === 1 ? "" : "s"})`);
    return 0;
  } finally {
    duck.close();
  }
}
