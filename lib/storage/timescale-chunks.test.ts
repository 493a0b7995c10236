/**
 * The hypertable's chunks (lib/storage/timescale-chunks.ts): the SQL text (every extension call qualified),
 * the SQL run against views and functions shaped as TimescaleDB 2.27/2.28's (created in a
 * transaction that is rolled back, where the extension is absent), history's metric in plain mode,
 * and, where TimescaleDB is installed and preloaded, the same on a real hypertable.
 */
import { expect, test } from "bun:test";
import { createHistory } from "../../history/history";
import { loadConfig } from "../config";
import { createLogger } from "../log";
import { connectPostgres } from "./pg";
import { COMPRESS_AFTER, migrate, timescaleSchema } from "./positions-db";
import {
  compressChunk,
  compressChunkSql,
  dayRowsSql,
  timescaleDayRows,
  uncompressedChunks,
  uncompressedChunksSql,
} from "./timescale-chunks";
import { timescaleTesting } from "../../dev/timescale-testing";

const { stack, admin, facts, timescaleTest, newSchema } = await timescaleTesting("timescale-chunks", "tsc");
const log = createLogger({ level: "error" });

const DAY = 86_400_000;
const dayOf = (ms: number) => new Date(ms).toISOString().slice(0, 10);

test("timescale chunks - the SQL calls the extension's functions qualified with its schema, and reads its views by their fixed schema", () => {
  const ts = '"my ts"';
  const rows = dayRowsSql(ts);
  const compress = compressChunkSql(ts);
  const due = uncompressedChunksSql();
  expect(rows).toContain(`${ts}.approximate_row_count(to_regclass(format('%I.%I', c.chunk_schema, c.chunk_name)))`);
  expect(compress).toContain(`${ts}.compress_chunk(format('%I.%I', $1::text, $2::text)::regclass, if_not_compressed => true)`);
  // No call of theirs is left unqualified (the session sees only the service's schema).
  for (const text of [rows, compress, due]) {
    for (const fn of ["approximate_row_count", "compress_chunk", "show_chunks", "drop_chunks"]) {
      expect([fn, new RegExp(`(^|[^.\\w])${fn}\\s*\\(`).test(text)]).toEqual([fn, false]);
    }
    expect(text).not.toMatch(/(FROM|JOIN)\s+(chunks|jobs)\b/);
  }
  for (const text of [rows, due]) expect(text).toContain("timescaledb_information.chunks c");
  expect(due).toContain("timescaledb_information.jobs j");
  expect(due).toContain(`interval '${COMPRESS_AFTER}'`);
  expect(COMPRESS_AFTER).toBe("2 days");
});

test.skipIf(facts.extensionSchema !== null)(
  `timescale chunks - the SQL runs on PostgreSQL against views and functions shaped as TimescaleDB 2.27's, from a session that sees only the service's schema${facts.extensionSchema !== null ? " (skipped: the real extension is created here; the cases below use it)" : ""}`,
  async () => {
    const schema = newSchema();
    await admin.unsafe(`CREATE SCHEMA ${schema}`);
    const sql = connectPostgres({ url: stack.databaseUrl, schema, max: 1 });
    const now = Date.now();
    const old = dayOf(now - 5 * DAY);
    const older = dayOf(now - 6 * DAY);
    const today = dayOf(now);
    const rollback = new Error("rollback");
    try {
      await sql
        .begin(async (tx) => {
          // The extension's pieces this code uses, with the names, argument names and column types of its 2.27 scripts;
          // its own schema has a space, so that only quoting makes the calls work.
          await tx.unsafe(`
            CREATE SCHEMA "ts stand-in";
            CREATE FUNCTION "ts stand-in".approximate_row_count(relation regclass) RETURNS bigint LANGUAGE sql STRICT
              AS $$ SELECT greatest(reltuples, 0)::int8 FROM pg_class WHERE oid = relation $$;
            CREATE TABLE ${schema}.compressed (chunk text);
            CREATE FUNCTION "ts stand-in".compress_chunk(uncompressed_chunk regclass, if_not_compressed boolean DEFAULT true, recompress boolean DEFAULT false)
              RETURNS regclass LANGUAGE sql STRICT AS $$ INSERT INTO ${schema}.compressed VALUES (uncompressed_chunk::text) RETURNING uncompressed_chunk $$;
            CREATE SCHEMA timescaledb_information;
            CREATE TABLE ${schema}."_hyper_1_1_chunk" AS SELECT g AS i FROM generate_series(1, 500) g;
            CREATE TABLE ${schema}."_hyper_1_2_chunk" AS SELECT g AS i FROM generate_series(1, 70) g;
            CREATE TABLE ${schema}."_hyper_1_3_chunk" AS SELECT g AS i FROM generate_series(1, 9) g;
            ANALYZE ${schema}."_hyper_1_1_chunk", ${schema}."_hyper_1_2_chunk", ${schema}."_hyper_1_3_chunk";
            CREATE VIEW timescaledb_information.chunks AS
              SELECT hypertable_schema::name, hypertable_name::name, chunk_schema::name, chunk_name::name, 'recorded_at'::name AS primary_dimension,
                     'timestamptz'::regtype AS primary_dimension_type, range_start::timestamptz, range_end::timestamptz,
                     NULL::int8 AS range_start_integer, NULL::int8 AS range_end_integer, is_compressed::boolean, NULL::name AS chunk_tablespace,
                     now() AS chunk_creation_time
              FROM (VALUES
                ('${schema}', 'positions', '${schema}', '_hyper_1_1_chunk', '${old} 00:00+00', '${old} 00:00+00'::timestamptz + interval '1 day', false),
                ('${schema}', 'positions', '${schema}', '_hyper_1_2_chunk', '${today} 00:00+00', '${today} 00:00+00'::timestamptz + interval '1 day', false),
                ('${schema}', 'positions', '${schema}', '_hyper_1_3_chunk', '${older} 00:00+00', '${older} 00:00+00'::timestamptz + interval '1 day', true),
                ('${schema}', 'positions', '${schema}', '_hyper_1_9_chunk', '${older} 00:00+00', '${older} 00:00+00'::timestamptz + interval '1 day', false),
                ('other', 'positions', 'other', '_hyper_2_4_chunk', '${old} 00:00+00', '${old} 00:00+00'::timestamptz + interval '1 day', false)
              ) v(hypertable_schema, hypertable_name, chunk_schema, chunk_name, range_start, range_end, is_compressed);
            CREATE VIEW timescaledb_information.jobs AS
              SELECT 1000 AS job_id, 'policy_compression'::name AS proc_name, '${schema}'::name AS hypertable_schema, 'positions'::name AS hypertable_name,
                     '{"hypertable_id": 1, "compress_after": "3 days"}'::jsonb AS config;
          `);
          // Day rows: each day's chunks' statistics (a chunk gone meanwhile, _hyper_1_9_chunk, counts 0).
          const rows = await timescaleDayRows(tx, '"ts stand-in"');
          expect(Object.fromEntries(rows)).toEqual({ [older]: 9, [old]: 500, [today]: 70 });
          // Due: older than the policy's 3 days, not compressed, this schema only; oldest first.
          const due = await uncompressedChunks(tx);
          expect(due.delay).toBe("3 days");
          expect(Math.abs(due.cutoff.getTime() - (now - 3 * DAY))).toBeLessThan(60_000);
          expect(due.chunks.map((c) => c.name)).toEqual([`${schema}._hyper_1_9_chunk`, `${schema}._hyper_1_1_chunk`]);
          expect(due.chunks[1]!.rangeStart.toISOString()).toBe(`${old}T00:00:00.000Z`);
          // --older-than overrides the policy.
          expect((await uncompressedChunks(tx, 7 * DAY)).chunks).toEqual([]);
          // Without the policy: COMPRESS_AFTER.
          await tx.unsafe(`CREATE OR REPLACE VIEW timescaledb_information.jobs AS SELECT 1 AS job_id, 'policy_retention'::name AS proc_name,
                           '${schema}'::name AS hypertable_schema, 'positions'::name AS hypertable_name, '{}'::jsonb AS config`);
          expect((await uncompressedChunks(tx)).delay).toBe(COMPRESS_AFTER);
          // Compress: the chunk, by its quoted name; a chunk gone meanwhile is skipped, not an error.
          expect(await compressChunk(tx, '"ts stand-in"', due.chunks[1]!)).toBe(true);
          expect(await compressChunk(tx, '"ts stand-in"', due.chunks[0]!)).toBe(false);
          expect((await tx.unsafe(`SELECT chunk FROM ${schema}.compressed`)).map((r) => r.chunk)).toEqual(["_hyper_1_1_chunk"]);
          throw rollback;
        })
        .catch((e: unknown) => {
          if (e !== rollback) throw e;
        });
      const [left] = await admin`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname IN ('ts stand-in', 'timescaledb_information')`;
      expect(left!.n).toBe(0); // nothing of the stand-in outlives the test
    } finally {
      await sql.end({ timeout: 1 });
    }
  },
  30_000,
);

async function startHistory(schema: string) {
  const lines: Record<string, unknown>[] = [];
  const h = await createHistory({
    config: loadConfig({
      ...stack.env(),
      HISTORY_DB_SCHEMA: schema,
      HISTORY_PORT: "0",
      FLEET_JWT_SECRET: "timescale-chunks-test",
      LOG_LEVEL: "error",
    }),
    log: createLogger({ level: "error", write: (l) => lines.push(JSON.parse(l)) }),
    consume: false,
  });
  const metric = async () => {
    const text = await (await fetch(`${h.adminUrl}/metrics`)).text();
    const m = /^history_uncompressed_chunks(?:\{[^}]*\})? (\S+)$/m.exec(text);
    return { exported: text.includes("history_uncompressed_chunks"), value: m ? Number(m[1]) : undefined, text };
  };
  return { h, metric };
}

test("timescale chunks - history_uncompressed_chunks is not exported in plain mode (nothing is compressed there)", async () => {
  const schema = newSchema();
  const sql = connectPostgres({ url: stack.databaseUrl, schema, max: 1 });
  try {
    expect(await migrate(sql, { schema, log, timescale: "off" })).toBe("plain");
  } finally {
    await sql.end({ timeout: 1 });
  }
  const { h, metric } = await startHistory(schema);
  try {
    expect(h.mode).toBe("plain");
    const m = await metric();
    expect(m.text).toContain("history_"); // the scrape itself worked
    expect(m.exported).toBe(false);
  } finally {
    await h.close();
  }
}, 30_000);

timescaleTest(
  "timescale chunks - on a real hypertable: an old day's chunk is due, counted by history_uncompressed_chunks, compressed by hand, then no longer due; its rows are estimated from the chunk's statistics",
  async () => {
    const schema = newSchema();
    const sql = connectPostgres({ url: stack.databaseUrl, schema, max: 1 });
    const { h, metric } = await (async () => {
      expect(await migrate(sql, { schema, log, timescale: "on" })).toBe("timescale");
      return startHistory(schema);
    })();
    try {
      const ts = (await timescaleSchema(sql))!;
      const old = dayOf(Date.now() - 5 * DAY);
      await sql.unsafe(`INSERT INTO positions (vehicle_id, recorded_at, seq, lat, lon, speed, heading, accuracy)
                        SELECT 'v' || (g % 3), '${old} 08:00+00'::timestamptz + g * interval '1 second', g, 52.5, 13.4, 0, 0, 5
                        FROM generate_series(1, 300) g`);
      await sql.unsafe(`ANALYZE positions`);
      expect((await timescaleDayRows(sql, ts)).get(old)).toBe(300);
      const due = await uncompressedChunks(sql);
      expect(due.delay).toBe(COMPRESS_AFTER);
      expect(due.chunks.length).toBe(1);
      expect(due.chunks[0]!.rangeStart.toISOString()).toBe(`${old}T00:00:00.000Z`);
      expect((await metric()).value).toBe(1);
      expect(await compressChunk(sql, ts, due.chunks[0]!)).toBe(true);
      const [c] =
        await sql`SELECT is_compressed FROM timescaledb_information.chunks WHERE hypertable_schema = ${schema} AND hypertable_name = 'positions'`;
      expect(c!.is_compressed).toBe(true);
      expect((await uncompressedChunks(sql)).chunks).toEqual([]);
      expect((await metric()).value).toBe(0);
      const [count] = await sql`SELECT count(*)::int AS n FROM positions`;
      expect(count!.n).toBe(300); // compressed, still read
    } finally {
      await h.close();
      await sql.end({ timeout: 1 });
    }
  },
  30_000,
);
