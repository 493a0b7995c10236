/** PostgreSQL (a fresh initdb, TimescaleDB preloaded when installed), for the development stack. */
import { spawn, spawnSync } from "node:child_process";
import { chownSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import postgres from "postgres";
import { serverEnv, StackError, tail, which, type Server, type ServerHost } from "./server";

export /** The folder holding postgres and initdb: the newest /usr/lib/postgresql/N/bin, else PATH. */
function findPostgresBin(): string | undefined {
  const base = "/usr/lib/postgresql";
  if (existsSync(base)) {
    const versions = readdirSync(base)
      .filter((v) => existsSync(join(base, v, "bin", "postgres")) && existsSync(join(base, v, "bin", "initdb")))
      .sort((a, b) => Number(b) - Number(a));
    if (versions[0]) return join(base, versions[0], "bin");
  }
  const pg = which("postgres");
  if (pg && which("initdb")) return resolve(pg, "..");
  return undefined;
}

/**
 * The server's library folder: `pg_config --pkglibdir` beside the server binaries, else their
 * ../lib (Debian's /usr/lib/postgresql/N/lib).
 */
function postgresLibDir(postgresBin: string): string {
  const pgConfig = join(postgresBin, "pg_config");
  if (existsSync(pgConfig)) {
    const r = spawnSync(pgConfig, ["--pkglibdir"], { encoding: "utf8" });
    const dir = r.status === 0 ? r.stdout.trim() : "";
    if (dir) return dir;
  }
  return resolve(postgresBin, "..", "lib");
}

/**
 * The server options that preload TimescaleDB when its loader (timescaledb.so, the library
 * shared_preload_libraries names; the versioned timescaledb-X.Y.Z.so is loaded by it) is in the
 * server's library folder; none otherwise. Without the preload, CREATE EXTENSION is a FATAL that
 * closes the connection. Telemetry off: a test or demo server has no business calling home.
 */
export function timescalePreloadOptions(libDir: string): string[] {
  if (!existsSync(join(libDir, "timescaledb.so"))) return [];
  return ["-c", "shared_preload_libraries=timescaledb", "-c", "timescaledb.telemetry_level=off"];
}

/** uid/gid of an OS user from /etc/passwd, or undefined. */
function osUser(name: string): { uid: number; gid: number } | undefined {
  try {
    for (const line of readFileSync("/etc/passwd", "utf8").split("\n")) {
      const f = line.split(":");
      if (f[0] === name && f[2] && f[3]) return { uid: Number(f[2]), gid: Number(f[3]) };
    }
  } catch {
    // no /etc/passwd: not Linux-like, treat as absent
  }
  return undefined;
}

export const isRoot = () => typeof process.getuid === "function" && process.getuid() === 0;

/**
 * initdb and postgres refuse to run as root. setpriv (util-linux) switches user and then execs, so the
 * pid we hold is postgres' own; runuser would stay in between as a parent that signals do not cross.
 */
function asPostgresUser(argv: string[]): string[] {
  if (!isRoot()) return argv;
  if (!osUser("postgres")) {
    throw new StackError(
      "PostgreSQL cannot run as root and there is no `postgres` OS user: install the postgresql package or set DATABASE_URL",
    );
  }
  const setpriv = which("setpriv", ["/usr/bin", "/bin"]);
  if (setpriv) return [setpriv, "--reuid=postgres", "--regid=postgres", "--init-groups", "--", ...argv];
  const runuser = which("runuser", ["/usr/sbin", "/sbin"]);
  if (runuser) return [runuser, "-u", "postgres", "--", ...argv];
  throw new StackError("PostgreSQL cannot run as root and neither setpriv nor runuser is here (util-linux): set DATABASE_URL");
}

/** initdb on first start, then postgres; ready once the `fleet` database exists. */
export async function startPostgres(s: Server, host: ServerHost): Promise<void> {
  const data = join(host.dir, "postgres");
  if (!existsSync(join(data, "PG_VERSION"))) {
    mkdirSync(data, { recursive: true });
    const owner = isRoot() ? osUser("postgres") : undefined;
    if (owner) chownSync(data, owner.uid, owner.gid);
    const fd = openSync(host.logFile("postgres"), "a");
    // -N: no fsync of the new cluster, it is a throwaway; C locale: fast and the same everywhere.
    const initdb = asPostgresUser([
      join(host.binaries.postgresBin!, "initdb"),
      "-D",
      data,
      "-U",
      "postgres",
      "--auth=trust",
      "-E",
      "UTF8",
      "--locale=C",
      "-N",
    ]);
    const r = await new Promise<number | null>((res) => {
      const c = spawn(initdb[0]!, initdb.slice(1), { cwd: host.dir, stdio: ["ignore", fd, fd], env: serverEnv() });
      c.once("exit", (code) => res(code));
      c.once("error", () => res(-1));
    });
    closeSync(fd);
    if (r !== 0)
      throw new StackError(`initdb failed (${r}); last lines of ${host.logFile("postgres")}:\n${tail(host.logFile("postgres"))}`);
  }
  // The socket lives in the data folder for `psql -h <host.dir>/postgres`; a path too long for a Unix
  // socket would stop PostgreSQL, so then only TCP.
  const socketDir = join(data, `.s.PGSQL.${s.port}`).length < 100 ? data : "";
  // fsync=off and full_page_writes=off: this is a test/demo server whose folder is thrown away, so
  // durability against power loss (or an OS crash) is not worth the time. A crash of the postgres
  // processes (SIGKILL) still loses nothing committed, because the WAL reaches the OS at commit;
  // that is what the restart tests exercise. synchronous_commit stays on for that reason: off, a
  // killed server loses its last commits. Real deployments give DATABASE_URL.
  host.spawnServer(
    s,
    asPostgresUser([
      join(host.binaries.postgresBin!, "postgres"),
      "-D",
      data,
      "-p",
      String(s.port),
      "-k",
      socketDir,
      "-c",
      "listen_addresses=127.0.0.1",
      "-c",
      "fsync=off",
      "-c",
      "full_page_writes=off",
      "-c",
      "max_connections=300",
      "-c",
      "log_min_messages=warning",
      ...timescalePreloadOptions(postgresLibDir(host.binaries.postgresBin!)),
    ]),
  );
  await host.waitReady(s, async () => {
    const sql = postgres({
      host: "127.0.0.1",
      port: s.port,
      user: "postgres",
      database: "postgres",
      max: 1,
      connect_timeout: 2,
      onnotice: () => {},
    });
    try {
      const rows = await sql<{ n: number }[]>`select count(*)::int as n from pg_database where datname = 'fleet'`;
      if (rows[0]?.n === 0) await sql`create database fleet`;
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
}
