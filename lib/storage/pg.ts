/**
 * PostgreSQL connections shared by history and the archiver (postgres.js): UTC sessions, an optional
 * schema (tests isolate by schema, not by server), and which errors mean "the server is away, retry".
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import postgres from "postgres";

export type Sql = postgres.Sql;
export type TransactionSql = postgres.TransactionSql;

export interface PostgresOptions {
  /** postgres://user@host:port/db */
  url: string;
  /** Schema holding the tables (created by the migrations when missing); default public. */
  schema?: string;
  /** Pool size. */
  max?: number;
  /** Shown in pg_stat_activity. */
  applicationName?: string;
  /** Seconds to wait for a connection. */
  connectTimeout?: number;
}

/** A schema name safe to put in SQL unquoted: lowercase letters, digits and underscores. */
export function checkSchemaName(schema: string): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
    throw new Error(`schema "${schema}" is not a plain lowercase identifier (a-z, 0-9, _)`);
  }
  return schema;
}

/**
 * Opens a pool. Sessions run in UTC with `search_path` set to the schema only, so SQL stays
 * unqualified; TimescaleDB's functions live in the extension's own schema and are called qualified
 * with it (lib/storage/positions-db.ts).
 */
export function connectPostgres({ url, schema = "public", max = 4, applicationName = "fleet", connectTimeout = 5 }: PostgresOptions): Sql {
  if (!url) throw new Error("DATABASE_URL is empty: history needs PostgreSQL (or run `fleet up`, which starts one)");
  return postgres(url, {
    max,
    onnotice: () => {},
    connect_timeout: connectTimeout,
    idle_timeout: 60,
    connection: { application_name: applicationName, TimeZone: "UTC", search_path: checkSchemaName(schema) },
  });
}

/** Work on PostgreSQL that did not settle in time (a write that waits for ever): its pool was ended and replaced. */
export class PgDeadlineError extends Error {
  readonly code = "PG_DEADLINE";
  constructor(what: string, ms: number) {
    super(`${what} did not settle within ${ms} ms: its PostgreSQL connections were closed, and new ones opened`);
    this.name = "PgDeadlineError";
  }
}

/** A pool whose work has a deadline, past which the pool is ended and a new one takes its place. */
export interface DeadlinePool {
  /** The pool in use now. */
  readonly sql: Sql;
  /**
   * Runs `work` on the pool in use. Past the deadline, rejects with a PgDeadlineError, opens a new pool
   * for what comes next, and ends the old one at once: every connection of it is closed, so that
   * what waits on it rejects (CONNECTION_DESTROYED) and the server rolls its transactions back. The
   * other work on that pool fails too (transiently: a retry runs on the new pool).
   */
  run<T>(what: string, work: (sql: Sql) => Promise<T>): Promise<T>;
  /** Ends the pool in use (as Sql.end). */
  end(options?: { timeout?: number }): Promise<void>;
}

/**
 * Opens a pool with `open`, whose work settles within `deadlineMs` (0: no deadline). The guard for a
 * driver that hangs: postgres.js 3.4.9 could leave a query waiting for an answer that never came
 * after a lost connection (patches/postgres+3.4.9.patch fixes the cases we know), and a process that
 * waits for ever on its writes stalls silently. A new pool, not the same one: postgres.js cannot end
 * one connection of a pool from outside, and a hung connection may be anywhere in it.
 */
export function deadlinePool(open: () => Sql, deadlineMs: number): DeadlinePool {
  let current = open();
  let ended = false;
  const replace = (stuck: Sql) => {
    if (ended || current !== stuck) return; // another deadline replaced it already
    current = open();
    stuck.end({ timeout: 0 }).catch(() => {});
  };
  return {
    get sql() {
      return current;
    },
    run(what, work) {
      const pool = current;
      if (!(deadlineMs > 0)) return work(pool);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          replace(pool);
          reject(new PgDeadlineError(what, deadlineMs));
        }, deadlineMs);
      });
      return Promise.race([work(pool), late]).finally(() => clearTimeout(timer));
    },
    end(options) {
      ended = true;
      return current.end(options);
    },
  };
}

/**
 * COPY … FROM STDIN of one text (or, for FORMAT binary, bytes); resolves when the server took every row, rejects with the server's
 * error (a unique violation, say) when it did not. Without the install's patch of postgres.js
 * (patches/postgres+3.4.9.patch) a COPY that the server fails never settles: check
 * `copyFailuresReported` before COPYing into a table with constraints.
 */
export async function copyFrom(sql: Sql | TransactionSql, statement: string, data: string | Uint8Array): Promise<void> {
  const w = await sql.unsafe(statement).writable();
  await new Promise<void>((resolve, reject) => {
    w.once("error", reject);
    w.end(data, (err?: Error | null) => (err ? reject(err) : resolve()));
  });
}

/** The line patches/postgres+3.4.9.patch adds so that a COPY FROM the server failed rejects. */
export const COPY_FAILURE_PATCH_LINE =
  "    final && (final(err), final = null) // fleet patch: a COPY FROM the server failed after its stream ended";

/** Whether the postgres.js in use reports a COPY FROM that the server failed (it has the install's patch). */
export const copyFailuresReported: boolean = (() => {
  try {
    // src/index.js or cjs/src/index.js, beside the connection.js it loads
    const entry = createRequire(import.meta.url).resolve("postgres");
    return readFileSync(join(dirname(entry), "connection.js"), "utf8").includes(COPY_FAILURE_PATCH_LINE);
  } catch {
    return false;
  }
})();

/**
 * True for an error no retry can mend, caused by the data itself: PostgreSQL's data exceptions
 * (SQLSTATE class 22: a value out of its type's range, text it cannot hold) and a RangeError from
 * formatting a value for it (a time no Date can hold).
 */
export function isDataException(err: unknown): boolean {
  if (err instanceof RangeError) return true;
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" && code.length === 5 && code.startsWith("22");
}

/** Error codes and messages that mean the server restarted, is starting or cannot be reached. */
const TRANSIENT_CODES = new Set([
  "57P01", // admin_shutdown
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now
  "08000",
  "08003",
  "08006",
  "08001",
  "08004",
  "40001", // serialization_failure
  "40P01", // deadlock_detected
  "55P03", // lock_not_available
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "PG_DEADLINE", // deadlinePool's: the retry runs on new connections
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
]);

/** True when retrying later may succeed (server down or restarting, a lost connection, a deadlock). */
export function isTransientPgError(err: unknown): boolean {
  const e = err as { code?: string; errno?: string; message?: string };
  if (!e) return false;
  if (e.code && TRANSIENT_CODES.has(e.code)) return true;
  if (e.errno && TRANSIENT_CODES.has(e.errno)) return true;
  return /ECONNREFUSED|ECONNRESET|connection (closed|ended|terminated)|socket|the database system is (starting|shutting)/i.test(
    e.message ?? "",
  );
}

/** A 64-bit advisory lock key from a name (e.g. "fleet-migrate:<schema>"). */
export function lockKey(name: string): bigint {
  let h = 0xcbf29ce484222325n;
  for (let i = 0; i < name.length; i++) {
    h ^= BigInt(name.charCodeAt(i));
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return BigInt.asIntN(64, h);
}

let guardInstalled = false;

/**
 * postgres.js 3.4.9 can throw, outside any query, `TypeError: … socket.write` from a write it
 * scheduled (setImmediate) on a connection the server has just closed — a PostgreSQL restart does
 * it. Thrown from a timer, it cannot be caught and would end the process (porsager/postgres#1066,
 * #1154, #1208; fixes proposed in #1168, #1209, not released). The queries of that connection were
 * already rejected with CONNECTION_CLOSED, which callers retry; so exactly this error is logged and
 * the process goes on. Any other uncaught error still ends it. patches/postgres+3.4.9.patch fixes the
 * driver itself at install (bun test fails a test on a timer's throw whatever handler is installed);
 * this guard is for an install that skipped that patch. Remove both once postgres.js has the fix.
 */
export function guardPostgresClosedSocketWrite(onCaught: (err: Error) => void): void {
  if (guardInstalled) return;
  guardInstalled = true;
  process.on("uncaughtException", (err) => {
    if (isClosedSocketWrite(err)) {
      onCaught(err);
      return;
    }
    // What Node/Bun would have done without a handler.
    console.error(err);
    process.exit(1);
  });
}

/** True for postgres.js's write to a socket it already dropped. */
export function isClosedSocketWrite(err: unknown): err is Error {
  return (
    err instanceof TypeError &&
    /socket\.write|reading 'write'/.test(err.message) &&
    /postgres[\\/]src[\\/]connection\.js/.test(err.stack ?? "") &&
    /nextWrite/.test(err.stack ?? "")
  );
}

/**
 * Runs `COPY (query) TO STDOUT …` and resolves with everything it sent. Read in flowing mode and
 * resumed once at the end, as the archiver's export learnt: postgres.js pauses its socket when a
 * COPY stream's buffer fills, and a pause on the last chunks left the connection deaf to the next
 * query's answer.
 */
export async function copyOutToBuffer(sql: Sql, copy: string): Promise<Buffer> {
  const readable = await sql.unsafe(copy).readable();
  const chunks: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    readable.on("data", (chunk: Buffer) => chunks.push(chunk));
    readable.once("end", () => resolve());
    readable.once("error", reject);
  });
  (readable as unknown as { _read?: () => void })._read?.();
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

/** The 11 bytes a binary COPY stream starts with. */
export const BINARY_COPY_SIGNATURE = Buffer.from("PGCOPY\n\xff\r\n\0", "latin1");

/** µs between the Unix epoch and PostgreSQL's (2000-01-01): its binary timestamps count from there. */
export const PG_EPOCH_US = 946_684_800_000_000;

/**
 * Where the rows of a `COPY … (FORMAT binary)` stream start (after the 11-byte signature, int32
 * flags, int32 extension length and the extension), or undefined while `buf` holds less than the
 * header. Throws when `buf` is not such a stream.
 */
export function binaryCopyHeaderEnd(buf: Buffer): number | undefined {
  if (!buf.subarray(0, 11).equals(BINARY_COPY_SIGNATURE.subarray(0, Math.min(11, buf.length)))) throw new Error("not a binary COPY stream");
  if (buf.length < 19 || buf.length < 19 + buf.readInt32BE(15)) return undefined;
  return 19 + buf.readInt32BE(15);
}

/**
 * The rows of a `COPY … (FORMAT binary)` as each row's fields: the raw bytes of each value (views
 * of `buf`), or null for SQL NULL. Binary COPY sends a bytea as it is, where a query's text result
 * would double it in hex that both sides then encode and decode.
 */
export function* binaryCopyRows(buf: Buffer): Generator<(Buffer | null)[]> {
  const start = binaryCopyHeaderEnd(buf);
  if (start === undefined) throw new Error("not a binary COPY stream");
  let o = start;
  while (o + 2 <= buf.length) {
    const count = buf.readInt16BE(o);
    o += 2;
    if (count === -1) return;
    const fields: (Buffer | null)[] = [];
    for (let i = 0; i < count; i++) {
      const len = buf.readInt32BE(o);
      o += 4;
      fields.push(len < 0 ? null : buf.subarray(o, o + len));
      if (len > 0) o += len;
    }
    yield fields;
  }
}

/** The single field of a one-row, one-column binary COPY: its bytes, or null for SQL NULL (or no row). */
export function binaryCopySingleValue(buf: Buffer): Buffer | null {
  for (const fields of binaryCopyRows(buf)) {
    if (fields.length !== 1) throw new Error(`binary COPY row has ${fields.length} fields, expected 1`);
    return fields[0]!;
  }
  return null;
}
