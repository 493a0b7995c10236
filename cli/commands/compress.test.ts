/**
 * `fleet compress` as an operator runs it: a separate process, its output and exit code, against the
 * test stack's PostgreSQL. Plain mode here; the TimescaleDB case runs where the extension is
 * installed and preloaded.
 */
import { expect, test } from "bun:test";
import { createLogger } from "../../lib/log";
import { connectPostgres, migrate } from "../../lib/storage";
import { timescaleTesting } from "../../dev/timescale-testing";

const root = `${import.meta.dir}/../..`;
const { stack, admin, usable, skipped, newSchema } = await timescaleTesting("compress", "cmp", { connections: 1 });
const log = createLogger({ level: "error" });

function fleet(args: string[], env: Record<string, string> = {}) {
  const proc = Bun.spawnSync([process.execPath, "cli/fleet.ts", "compress", ...args], {
    cwd: root,
    env: { ...process.env, LOG_LEVEL: "error", ...env },
  });
  return { code: proc.exitCode, stdout: proc.stdout.toString(), stderr: proc.stderr.toString() };
}

test("compress - --help explains what it compresses, why, the options and the SQL to run by hand", () => {
  const out = fleet(["--help"]);
  expect(out.code).toBe(0);
  expect(out.stdout).toMatch(/^usage: fleet compress \[--older-than DURATION\] \[--dry-run\]/);
  for (const s of [
    "--older-than",
    "--dry-run",
    "cannot drop portal",
    "history_uncompressed_chunks",
    "compress_chunk(",
    "timescaledb_information.chunks",
  ])
    expect(out.stdout).toContain(s);
});

test("compress - a wrong option or duration says so and exits 2", () => {
  const bad = fleet(["--bogus"]);
  expect(bad.code).toBe(2);
  expect(bad.stderr).toContain("--bogus");
  const duration = fleet(["--older-than", "two days"], { DATABASE_URL: stack.databaseUrl });
  expect(duration.code).toBe(2);
  expect(duration.stderr).toContain('--older-than: expected a duration like 250ms, 30s, 5m, 2h or 7d, got "two days"');
});

test("compress - plain mode: nothing to compress, TimescaleDB is not in use, exit 0 (with --dry-run too)", async () => {
  const schema = newSchema();
  const sql = connectPostgres({ url: stack.databaseUrl, schema, max: 1 });
  try {
    expect(await migrate(sql, { schema, log, timescale: "off" })).toBe("plain");
  } finally {
    await sql.end({ timeout: 1 });
  }
  for (const args of [[], ["--dry-run"], ["--older-than", "1d"]]) {
    const out = fleet(args, { DATABASE_URL: stack.databaseUrl, HISTORY_DB_SCHEMA: schema });
    expect([args, out.code, out.stderr]).toEqual([args, 0, ""]);
    expect(out.stdout.trim()).toBe(
      `nothing to compress: schema ${schema} stores positions in plain day partitions (TimescaleDB is not in use)`,
    );
  }
});

test("compress - a schema history never started in: nothing to compress yet, exit 0, and nothing created", async () => {
  const schema = newSchema();
  await admin.unsafe(`CREATE SCHEMA ${schema}`);
  const out = fleet([], { DATABASE_URL: stack.databaseUrl, HISTORY_DB_SCHEMA: schema });
  expect(out.code).toBe(0);
  expect(out.stdout.trim()).toBe(`nothing to compress: schema ${schema} holds no history tables yet (history creates them at start)`);
  const [t] = await admin`SELECT count(*)::int AS n FROM pg_class WHERE relnamespace = ${schema}::regnamespace`;
  expect(t!.n).toBe(0);
});

test("compress - no DATABASE_URL: says which variable to set, exit 2", () => {
  const out = fleet([], { DATABASE_URL: "" });
  expect(out.code).toBe(2);
  expect(out.stderr.trim()).toBe("fleet compress: DATABASE_URL is empty: set it to the PostgreSQL that history writes to");
});

test.skipIf(!usable)(
  `compress - TimescaleDB: --dry-run lists the old uncompressed chunk and compresses nothing; then each chunk is compressed with a progress line, and a second run finds nothing${usable ? "" : ` (${skipped})`}`,
  async () => {
    const schema = newSchema();
    const sql = connectPostgres({ url: stack.databaseUrl, schema, max: 1 });
    try {
      expect(await migrate(sql, { schema, log, timescale: "on" })).toBe("timescale");
      const old = new Date(Date.now() - 5 * 86_400_000).toISOString().slice(0, 10);
      await sql.unsafe(`INSERT INTO positions (vehicle_id, recorded_at, seq, lat, lon, speed, heading, accuracy)
                        SELECT 'v1', '${old} 08:00+00'::timestamptz + g * interval '1 second', g, 52.5, 13.4, 0, 0, 5 FROM generate_series(1, 100) g`);
      const env = { DATABASE_URL: stack.databaseUrl, HISTORY_DB_SCHEMA: schema };
      const compressed = async () =>
        (await sql`SELECT bool_and(is_compressed) AS c FROM timescaledb_information.chunks WHERE hypertable_schema = ${schema}`)[0]!.c;
      const dry = fleet(["--dry-run"], env);
      expect([dry.code, dry.stderr]).toEqual([0, ""]);
      expect(dry.stdout).toContain(`would compress 1 chunk of ${schema}.positions older than 2 days`);
      expect(dry.stdout).toMatch(new RegExp(`\\[1/1\\] \\S+ ${old}T00:00Z \\.\\. `));
      expect(await compressed()).toBe(false);
      const out = fleet([], env);
      expect([out.code, out.stderr]).toEqual([0, ""]);
      expect(out.stdout).toMatch(/\[1\/1\] .*: compressed in \d+\.\d s/);
      expect(out.stdout).toContain("done: 1 chunk compressed");
      expect(await compressed()).toBe(true);
      const again = fleet([], env);
      expect(again.code).toBe(0);
      expect(again.stdout).toContain(`nothing to compress: every chunk of ${schema}.positions older than 2 days`);
    } finally {
      await sql.end({ timeout: 1 });
    }
  },
  60_000,
);
