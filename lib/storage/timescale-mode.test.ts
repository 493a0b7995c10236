/**
 * Which storage the history schema gets (HISTORY_TIMESCALE, lib/storage/positions-db.ts): the decision as a
 * table of what the server has, the one query that reads it (against the test stack's real server),
 * the stack's preload, and the services' start in each setting. The cases that need TimescaleDB run
 * where it is installed and preloaded; elsewhere their names and a line in the output say they were
 * skipped.
 */
import { expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHistory } from "../../history/history";
import { ConfigError, loadConfig } from "../config";
import { createLogger } from "../log";
import { connectPostgres } from "./pg";
import {
  chooseStorage,
  migrate,
  preloadsTimescale,
  TIMESCALE_SCHEMA,
  timescaleFacts,
  TimescaleUnavailableError,
  type TimescaleFacts,
  type TimescaleSetting,
} from "./positions-db";
import { timescalePreloadOptions } from "../../dev";
import { timescaleTesting } from "../../dev/timescale-testing";

const { stack, admin, facts, usable, timescaleTest, newSchema } = await timescaleTesting("timescale-mode", "tsm");
const log = createLogger({ level: "error" });

const none: TimescaleFacts = { installed: false, preloadLibraries: "", loaderLoaded: false, extensionSchema: null };
const installedOnly: TimescaleFacts = { ...none, installed: true };
const preloaded: TimescaleFacts = { ...none, installed: true, preloadLibraries: "pg_stat_statements,timescaledb" };
const created: TimescaleFacts = { ...preloaded, extensionSchema: "timescaledb" };
/** A role that may not read shared_preload_libraries: the loader's setting tells. */
const hiddenPreload: TimescaleFacts = { installed: true, preloadLibraries: null, loaderLoaded: true, extensionSchema: null };

const decide = (setting: TimescaleSetting, f: TimescaleFacts, recorded?: "plain" | "timescale") => {
  try {
    const c = chooseStorage(setting, f, recorded, "svc");
    return c.createExtension ? `${c.mode}+create` : c.mode;
  } catch (err) {
    expect(err).toBeInstanceOf(TimescaleUnavailableError);
    return `error: ${(err as Error).message}`;
  }
};

test("timescale mode - the decision table: usable means preloaded and installed (or created); merely installed is never used", () => {
  // setting × (installed?, preloaded?, created?) for a new schema
  expect(decide("auto", none)).toBe("plain");
  expect(decide("auto", installedOnly)).toBe("plain");
  expect(decide("auto", preloaded)).toBe("timescale+create");
  expect(decide("auto", hiddenPreload)).toBe("timescale+create");
  expect(decide("auto", created)).toBe("timescale");
  expect(decide("off", none)).toBe("plain");
  expect(decide("off", installedOnly)).toBe("plain");
  expect(decide("off", preloaded)).toBe("plain");
  expect(decide("off", created)).toBe("plain");
  expect(decide("on", preloaded)).toBe("timescale+create");
  expect(decide("on", created)).toBe("timescale");
  expect(decide("on", hiddenPreload)).toBe("timescale+create");
  // on names what is missing and how to fix it
  expect(decide("on", none)).toBe(
    "error: HISTORY_TIMESCALE=on but timescaledb is not installed for this PostgreSQL server: install TimescaleDB for this PostgreSQL version (2.28.3 is the last for PostgreSQL 15) and preload it, or set HISTORY_TIMESCALE=auto or off",
  );
  expect(decide("on", installedOnly)).toBe(
    "error: HISTORY_TIMESCALE=on but timescaledb is installed but not preloaded: add it to shared_preload_libraries (ALTER SYSTEM SET shared_preload_libraries = 'timescaledb', or postgresql.conf) and restart PostgreSQL, or set HISTORY_TIMESCALE=auto or off",
  );
  // created without the preload breaks any DDL (its event triggers load the library): said at start, whatever the setting
  for (const s of ["auto", "on", "off"] as const)
    expect(decide(s, { ...installedOnly, extensionSchema: "public" })).toContain(
      "error: timescaledb is created in this database but not preloaded",
    );
});

test("timescale mode - a schema keeps the mode its first migration recorded; a setting that contradicts it fails saying what to do", () => {
  expect(decide("auto", created, "plain")).toBe("plain");
  expect(decide("off", created, "plain")).toBe("plain");
  expect(decide("on", created, "plain")).toBe(
    "error: HISTORY_TIMESCALE=on but schema svc already holds plain day partitions: use a new HISTORY_DB_SCHEMA for TimescaleDB, or set HISTORY_TIMESCALE=auto",
  );
  expect(decide("auto", created, "timescale")).toBe("timescale");
  expect(decide("on", created, "timescale")).toBe("timescale");
  expect(decide("off", created, "timescale")).toBe(
    "error: HISTORY_TIMESCALE=off but schema svc holds a TimescaleDB hypertable: set HISTORY_TIMESCALE=auto (or on), or use a new HISTORY_DB_SCHEMA",
  );
});

test("timescale mode - shared_preload_libraries names the loader in any of its spellings, and nothing else", () => {
  for (const v of [
    "timescaledb",
    "pg_stat_statements, timescaledb",
    '"timescaledb"',
    "$libdir/timescaledb",
    "/usr/lib/postgresql/15/lib/timescaledb.so",
  ]) {
    expect([v, preloadsTimescale(v)]).toEqual([v, true]);
  }
  for (const v of ["", null, "pg_stat_statements", "timescaledb_toolkit", "timescaledb-2.28.3", "notimescaledb"]) {
    expect([v, preloadsTimescale(v)]).toEqual([v, false]);
  }
});

test("timescale mode - HISTORY_TIMESCALE is auto by default; anything but auto, on or off stops the start naming the variable", () => {
  expect(loadConfig({}).historyTimescale).toBe("auto");
  expect(loadConfig({ HISTORY_TIMESCALE: "off" }).historyTimescale).toBe("off");
  expect(() => loadConfig({ HISTORY_TIMESCALE: "yes" })).toThrow(ConfigError);
  expect(() => loadConfig({ HISTORY_TIMESCALE: "yes" })).toThrow('HISTORY_TIMESCALE: expected one of auto, on, off, got "yes"');
});

test("timescale mode - the stack preloads TimescaleDB when its loader is in the server's library folder, and only then", () => {
  const dir = mkdtempSync(join(tmpdir(), "fleet-tslib-"));
  try {
    expect(timescalePreloadOptions(dir)).toEqual([]);
    writeFileSync(join(dir, "timescaledb-2.28.3.so"), ""); // the versioned library alone cannot be preloaded
    expect(timescalePreloadOptions(dir)).toEqual([]);
    writeFileSync(join(dir, "timescaledb.so"), "");
    expect(timescalePreloadOptions(dir)).toEqual(["-c", "shared_preload_libraries=timescaledb", "-c", "timescaledb.telemetry_level=off"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** `pg_config --<what>` of the server the stack started, or undefined when DATABASE_URL gave another. */
function pgConfig(what: string): string | undefined {
  if (process.env.DATABASE_URL) return undefined;
  // The newest /usr/lib/postgresql/N, as the stack chooses it.
  const base = "/usr/lib/postgresql";
  const newest = existsSync(base) ? readdirSync(base).sort((a, b) => Number(b) - Number(a))[0] : undefined;
  if (!newest) return undefined;
  const r = spawnSync(join(base, newest, "bin", "pg_config"), [`--${what}`], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

test("timescale mode - the one query reads what the server's files and the stack's preload say, as a superuser and as a role that may not read shared_preload_libraries", async () => {
  const [show] = await admin`SELECT current_setting('shared_preload_libraries') AS v`;
  expect(facts.preloadLibraries).toBe(show!.v as string);
  const sharedir = pgConfig("sharedir");
  const libdir = pgConfig("pkglibdir");
  if (sharedir && libdir) {
    // The stack's own server: installed means the control file is there, preloaded means the stack found the loader.
    expect(facts.installed).toBe(existsSync(join(sharedir, "extension", "timescaledb.control")));
    expect(preloadsTimescale(facts.preloadLibraries)).toBe(existsSync(join(libdir, "timescaledb.so")));
    expect(facts.loaderLoaded).toBe(existsSync(join(libdir, "timescaledb.so")));
  }
  const role = `tsm_probe_${process.pid}`;
  await admin.unsafe(`DROP ROLE IF EXISTS ${role}`);
  await admin.unsafe(`CREATE ROLE ${role} LOGIN`);
  const url = new URL(stack.databaseUrl);
  url.username = role;
  const probe = connectPostgres({ url: url.toString(), max: 1 });
  try {
    const seen = await timescaleFacts(probe);
    expect(seen.preloadLibraries).toBeNull(); // hidden from this role, and no error
    expect({ ...seen, preloadLibraries: facts.preloadLibraries }).toEqual(facts);
    expect(chooseStorage("auto", seen).mode).toBe(chooseStorage("auto", facts).mode);
  } finally {
    await probe.end({ timeout: 1 });
    await admin.unsafe(`DROP ROLE IF EXISTS ${role}`);
  }
});

test("timescale mode - HISTORY_TIMESCALE=off and auto start history in the mode the server allows, and say which and why", async () => {
  for (const setting of ["off", "auto"] as const) {
    const schema = newSchema();
    const lines: Record<string, unknown>[] = [];
    const h = await createHistory({
      config: loadConfig({
        ...stack.env(),
        HISTORY_DB_SCHEMA: schema,
        HISTORY_TIMESCALE: setting,
        HISTORY_PORT: "0",
        FLEET_JWT_SECRET: "timescale-mode-test",
        LOG_LEVEL: "error",
      }),
      log: createLogger({ level: "info", write: (l) => lines.push(JSON.parse(l)) }),
      consume: false,
    });
    try {
      const want = setting === "off" || !usable ? "plain" : "timescale";
      expect([setting, h.mode]).toEqual([setting, want]);
      const said = lines.find((l) => l.msg === "storage mode");
      expect(said).toMatchObject({ schema, mode: want, timescale: setting });
      if (want === "plain")
        expect(said!.reason).toBe(
          setting === "off"
            ? "HISTORY_TIMESCALE=off"
            : facts.installed
              ? "timescaledb is installed but not preloaded"
              : "timescaledb is not installed for this PostgreSQL server",
        );
      // What the database holds, not what the code believes: a partitioned table, or a hypertable.
      const [kind] =
        await admin`SELECT c.relkind FROM pg_class c WHERE c.relname = 'positions' AND c.relnamespace = ${schema}::regnamespace`;
      expect(kind!.relkind).toBe(want === "plain" ? "p" : "r");
    } finally {
      await h.close();
    }
  }
}, 30_000);

test.skipIf(usable)(
  `timescale mode - HISTORY_TIMESCALE=on fails at start naming what is missing${usable ? " (skipped: TimescaleDB is usable here)" : ""}`,
  async () => {
    const schema = newSchema();
    const err = await createHistory({
      config: loadConfig({
        ...stack.env(),
        HISTORY_DB_SCHEMA: schema,
        HISTORY_TIMESCALE: "on",
        HISTORY_PORT: "0",
        FLEET_JWT_SECRET: "timescale-mode-test",
        LOG_LEVEL: "error",
      }),
      log,
      consume: false,
    }).then(
      (h) => (h.close(), undefined),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TimescaleUnavailableError);
    expect((err as Error).message).toBe(
      facts.installed
        ? "HISTORY_TIMESCALE=on but timescaledb is installed but not preloaded: add it to shared_preload_libraries (ALTER SYSTEM SET shared_preload_libraries = 'timescaledb', or postgresql.conf) and restart PostgreSQL, or set HISTORY_TIMESCALE=auto or off"
        : "HISTORY_TIMESCALE=on but timescaledb is not installed for this PostgreSQL server: install TimescaleDB for this PostgreSQL version (2.28.3 is the last for PostgreSQL 15) and preload it, or set HISTORY_TIMESCALE=auto or off",
    );
    // Nothing was made in the schema: the next start, with a working setting, begins afresh.
    const [t] =
      await admin`SELECT count(*)::int AS n FROM pg_class WHERE relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = ${schema})`;
    expect(t!.n).toBe(0);
  },
);

test("timescale mode - a plain schema stays plain: HISTORY_TIMESCALE=on on it fails saying to use a new schema", async () => {
  const schema = newSchema();
  const sql = connectPostgres({ url: stack.databaseUrl, schema, max: 1 });
  try {
    expect(await migrate(sql, { schema, log, timescale: "off" })).toBe("plain");
    expect(await migrate(sql, { schema, log, timescale: "auto" })).toBe("plain");
    const err = await migrate(sql, { schema, log, timescale: "on" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TimescaleUnavailableError);
    expect((err as Error).message).toContain(`schema ${schema} already holds plain day partitions: use a new HISTORY_DB_SCHEMA`);
  } finally {
    await sql.end({ timeout: 1 });
  }
});

timescaleTest(
  "timescale mode - on: positions is a hypertable of one-day chunks with a compression policy in a schema not public; the extension lives outside every service schema and survives its DROP … CASCADE",
  async () => {
    const schema = newSchema();
    const sql = connectPostgres({ url: stack.databaseUrl, schema, max: 1 });
    try {
      expect(await migrate(sql, { schema, log, timescale: "on" })).toBe("timescale");
      const [ext] =
        await admin`SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'timescaledb'`;
      expect(ext!.nspname).not.toBe(schema);
      if (!facts.extensionSchema) expect(ext!.nspname).toBe(TIMESCALE_SCHEMA); // created by us: in its own schema
      const [ht] = await admin`
        SELECT d.time_interval::text AS interval FROM timescaledb_information.dimensions d
        WHERE d.hypertable_schema = ${schema} AND d.hypertable_name = 'positions' AND d.column_name = 'recorded_at'`;
      expect(ht?.interval).toBe("1 day");
      const jobs =
        await admin`SELECT proc_name FROM timescaledb_information.jobs WHERE hypertable_schema = ${schema} AND hypertable_name = 'positions'`;
      expect(jobs.map((j) => j.proc_name)).toContain("policy_compression");
      // A row lands in a chunk of its day, seen by hotDays' view.
      await sql`INSERT INTO positions (vehicle_id, recorded_at, seq, lat, lon, speed, heading, accuracy) VALUES ('t1', '2026-03-04 05:06:07+00', 1, 52.5, 13.4, 0, 0, 5)`;
      const [chunk] =
        await admin`SELECT count(*)::int AS n FROM timescaledb_information.chunks WHERE hypertable_schema = ${schema} AND hypertable_name = 'positions'`;
      expect(chunk!.n).toBe(1);
      // A second start of the same schema keeps it.
      expect(await migrate(sql, { schema, log, timescale: "auto" })).toBe("timescale");
      await sql.end({ timeout: 1 });
      await admin.unsafe(`DROP SCHEMA ${schema} CASCADE`);
      const [still] = await admin`SELECT count(*)::int AS n FROM pg_extension WHERE extname = 'timescaledb'`;
      expect(still!.n).toBe(1);
    } finally {
      await sql.end({ timeout: 1 }).catch(() => {});
    }
  },
  30_000,
);
