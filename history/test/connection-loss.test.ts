/**
 * A write transaction whose PostgreSQL connection is lost mid-query (a restart, a killed backend, a
 * failover): the write fails with a transient error, and the next ones on the same pool complete.
 *
 * Before patches/postgres+3.4.9.patch taught postgres.js otherwise, a lost transaction went on with
 * its own ROLLBACK on the dead connection: the ROLLBACK was queued there, never sent, and never
 * settled. The pool's next transaction on that connection then took each answer for the query
 * before: `begin`'s for the ROLLBACK, SAVEPOINT's for `begin`..., and waited forever for an answer
 * the server had already given (history stopped writing after a PostgreSQL restart, 1 run in 4 of
 * writer.test.ts). A backend ended with pg_terminate_backend also left its FATAL error behind, and
 * the connection's next transaction failed with it.
 *
 * Each test loses the connection while a query is certainly in flight (waiting on a lock or a row the
 * test holds), so every run takes that path: through a TCP proxy that cuts the connection as a killed
 * server does (no message, the socket just closes), or with pg_terminate_backend (a FATAL, then the close).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { connect, createServer, type Socket } from "node:net";
import { testStack } from "../../dev";
import { createLogger } from "../../lib/log";
import { connectPostgres, isTransientPgError, lockKey, migrate, type Sql } from "../../lib/storage";
import { PgDeadlineError } from "../../lib/storage/pg";
import type { Row } from "../row";
import { createPositionWriter } from "../write-positions";
import { countRows, uniqueName } from "./helpers";

let url = "";
let schema = "";
let admin: Sql;
const pools: Sql[] = [];
const proxies: Proxy[] = [];
beforeAll(async () => {
  const stack = await testStack(["postgres"]);
  url = stack.databaseUrl;
  schema = uniqueName("hl");
  admin = connectPostgres({ url, schema, max: 3, applicationName: "connection-loss admin" });
  await migrate(admin, { schema, log: createLogger({ level: "error" }), timescale: "off" });
}, 60_000); // the test stack's servers start here (seconds on a busy machine; bun's hook default is 5 s)
afterAll(async () => {
  await Promise.all([admin, ...pools].map((p) => p?.end({ timeout: 1 })));
  for (const p of proxies) p.close();
});

interface Proxy {
  /** The database URL through the proxy. */
  url: string;
  /**
   * Closes every connection through it, both ways, as a killed server's sockets close: with a FIN
   * (the client reads the end), or with a RST (the client gets ECONNRESET: 'error', then 'close').
   */
  cut(how?: "fin" | "reset"): void;
  close(): void;
}

/** A TCP proxy to the test's PostgreSQL. */
async function proxy(): Promise<Proxy> {
  const target = new URL(url);
  const open = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      open.add(s);
      s.on("close", () => open.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const via = new URL(url);
  via.hostname = "127.0.0.1";
  via.port = String((server.address() as { port: number }).port);
  const p: Proxy = {
    url: via.toString(),
    cut: (how = "fin") => {
      for (const s of open) how === "reset" ? s.resetAndDestroy() : s.destroy();
    },
    close: () => {
      p.cut();
      server.close();
    },
  };
  proxies.push(p);
  return p;
}

/** A pool of two connections (as small as a history writer's may be) named `name` in pg_stat_activity. */
function pool(name: string, through = url): Sql {
  const sql = connectPostgres({ url: through, schema, max: 2, applicationName: name });
  pools.push(sql);
  return sql;
}

/** `p`, or a rejection naming `what` after `ms`: a hang fails the test instead of the run. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms (postgres.js hung)`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Waits until a backend of `applicationName` waits on a lock; its pid. */
async function waitingBackend(applicationName: string): Promise<number> {
  for (let i = 0; i < 250; i++) {
    const [r] = await admin`
      SELECT pid FROM pg_stat_activity WHERE application_name = ${applicationName} AND wait_event_type = 'Lock'`;
    if (r) return r.pid as number;
    await Bun.sleep(20);
  }
  throw new Error(`no backend of ${applicationName} waited on the lock`);
}

/** Two transactions at once, three times: whichever connection the pool picks, the lost one is taken again. */
async function transactionsComplete(sql: Sql): Promise<void> {
  for (let round = 1; round <= 3; round++) {
    const both = await within(
      Promise.all([sql.begin((tx) => tx`SELECT 1 AS one`), sql.begin(async (tx) => [...(await tx`SELECT 2 AS two`)])]),
      5_000,
      `two transactions after the loss (round ${round})`,
    );
    expect(both).toEqual([[{ one: 1 }], [{ two: 2 }]] as never);
  }
}

/** A transaction of `sql` waiting on an advisory lock the test holds while `lose(pid)` loses its connection. */
async function loseTransaction(sql: Sql, name: string, lose: (pid: number) => Promise<void> | void): Promise<unknown> {
  const key = lockKey(name).toString();
  return admin.begin(async (hold) => {
    await hold`SELECT pg_advisory_xact_lock(${key})`;
    const lost = sql.begin(async (tx) => {
      await tx`SELECT 1`;
      await tx`SELECT pg_advisory_xact_lock(${key})`;
    });
    await lose(await waitingBackend(name));
    return within(lost, 10_000, "the lost transaction").then(
      () => new Error("the lost transaction committed"),
      (err) => err,
    );
  });
}

test("connection loss - the server's socket closes mid-transaction (a killed PostgreSQL): the transaction rejects, the next ones complete", async () => {
  const name = uniqueName("tx-cut");
  const p = await proxy();
  const sql = pool(name, p.url);
  const err = await loseTransaction(sql, name, () => p.cut());
  expect(isTransientPgError(err)).toBe(true);
  await transactionsComplete(sql);
}, 30_000);

test("connection loss - a lost transaction's callback that goes on runs nothing on the connection, which serves another transaction by then", async () => {
  const name = uniqueName("tx-late");
  const p = await proxy();
  const sql = pool(name, p.url);
  await admin`CREATE TABLE IF NOT EXISTS tx_late (k text)`;
  let resume = () => {};
  const resumed = new Promise<void>((r) => (resume = r));
  let late: Promise<string> | undefined;
  const key = lockKey(name).toString();
  await admin.begin(async (hold) => {
    await hold`SELECT pg_advisory_xact_lock(${key})`;
    const lost = sql.begin(async (tx) => {
      await tx`SELECT 1`;
      await tx`SELECT pg_advisory_xact_lock(${key})`.catch(() => {}); // the loss, caught: the callback goes on
      await resumed;
      late = tx`INSERT INTO tx_late VALUES (${name})`.then(
        () => "ran",
        (e) => e.code,
      );
      await late;
    });
    await waitingBackend(name);
    p.cut();
    await within(lost, 10_000, "the lost transaction").catch(() => {});
  });
  // Both connections of the pool in other transactions, then the lost callback's INSERT.
  const others = Promise.all([0, 1].map(() => sql.begin((tx) => tx`SELECT pg_sleep(0.5)`)));
  for (let i = 0; i < 100; i++) {
    const [r] = await admin`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = ${name} AND wait_event = 'PgSleep'`;
    if (r!.n === 2) break;
    await Bun.sleep(20);
  }
  resume();
  await within(others, 5_000, "the other transactions");
  await Bun.sleep(50);
  expect(await within(late!, 5_000, "the lost callback's INSERT")).toBe("CONNECTION_CLOSED");
  expect(await admin`SELECT k FROM tx_late WHERE k = ${name}`).toEqual([] as never); // not committed by another transaction
}, 30_000);

test("connection loss - the backend is terminated mid-transaction (FATAL, then the close): the next transactions neither hang nor get its error", async () => {
  const name = uniqueName("tx-term");
  const sql = pool(name);
  const err = await loseTransaction(sql, name, async (pid) => {
    await admin`SELECT pg_terminate_backend(${pid})`;
  });
  expect(isTransientPgError(err)).toBe(true);
  await transactionsComplete(sql);
}, 30_000);

const T0 = Date.UTC(2026, 10, 21, 8, 0, 0);
/** `n` points of a vehicle a second apart, from point `from`. */
const rowsOf = (vehicleId: string, n: number, from = 0): Row[] =>
  Array.from({ length: n }, (_, k) => {
    const i = from + k;
    return {
      vehicleId,
      us: (T0 + i * 1000) * 1000,
      seq: i + 1,
      fleetId: "f",
      lat: 52.5 + i * 1e-4,
      lon: 13.4,
      speed: 10,
      heading: 0,
      accuracy: 5,
      orderId: "",
      status: 0,
      receivedUs: Number.NaN,
    };
  });

for (const how of ["fin", "reset"] as const) {
  test(`connection loss - PostgreSQL's socket closes (${how}) while a write's COPY is in flight: the write fails as transient, the next ones complete, each row once`, async () => {
    const name = uniqueName(`writer-${how}`);
    const p = await proxy();
    const [v1, v2] = [`${how}-1`, `${how}-2`];
    const writer = createPositionWriter({ connect: () => pool(name, p.url), mode: "plain", schema });
    await writer.write(rowsOf(v1, 10)); // partitions made, a connection open
    // A row of the next batch inserted and not committed: the COPY of that batch waits on it, mid-COPY.
    const hold = await admin.reserve();
    await hold`BEGIN`;
    const [row] = rowsOf(v1, 1, 15);
    await hold`INSERT INTO positions (vehicle_id, recorded_at, seq, fleet_id, lat, lon, speed, heading, accuracy, order_id, status)
    VALUES (${row!.vehicleId}, ${new Date(row!.us / 1000)}, ${row!.seq}, 'f', 0, 0, 0, 0, 0, '', 0)`;
    const lost = writer.write(rowsOf(v1, 10, 10));
    const pid = await waitingBackend(name);
    const [copying] = await admin`SELECT query FROM pg_stat_activity WHERE pid = ${pid}`;
    expect(copying!.query).toStartWith("COPY positions");
    p.cut(how);
    const err = await within(lost, 10_000, "the lost write").then(
      () => new Error("the lost write committed"),
      (e) => e,
    );
    await hold`ROLLBACK`; // the test's row goes: the retry writes it
    hold.release();
    expect(isTransientPgError(err)).toBe(true);
    // The lost batch again and new ones, two writes at a time (both connections of the pool), three times.
    for (let round = 0; round < 3; round++) {
      await within(
        Promise.all([writer.write(rowsOf(v1, 10, 10 + round * 10)), writer.write(rowsOf(v2, 10, round * 10))]),
        5_000,
        `writes after the loss (round ${round + 1})`,
      );
    }
    expect(await countRows(admin, v1)).toBe(40);
    expect(await countRows(admin, v2)).toBe(30);
    const [r] = await admin`SELECT sum(points)::int AS points FROM positions_rollup WHERE vehicle_id IN (${v1}, ${v2})`;
    expect(r!.points).toBe(70);
  }, 30_000);
}

test("connection loss - a write that does not settle by its deadline rejects as transient, its connection is closed, and the next write completes on new ones", async () => {
  const name = uniqueName("writer-deadline");
  const writer = createPositionWriter({ connect: () => pool(name), deadlineMs: 1000, mode: "plain", schema });
  await writer.write(rowsOf("cl3", 10));
  // As above, the COPY waits on a row the test holds; this time nothing cuts the connection.
  const hold = await admin.reserve();
  await hold`BEGIN`;
  const [row] = rowsOf("cl3", 1, 15);
  await hold`INSERT INTO positions (vehicle_id, recorded_at, seq, fleet_id, lat, lon, speed, heading, accuracy, order_id, status)
    VALUES (${row!.vehicleId}, ${new Date(row!.us / 1000)}, ${row!.seq}, 'f', 0, 0, 0, 0, 0, '', 0)`;
  const t0 = performance.now();
  const stuck = writer.write(rowsOf("cl3", 10, 10));
  const pid = await waitingBackend(name);
  const err = await within(stuck, 5_000, "the write past its deadline").catch((e) => e);
  expect(err).toBeInstanceOf(PgDeadlineError);
  expect(isTransientPgError(err)).toBe(true);
  expect(performance.now() - t0).toBeLessThan(3_000);
  await hold`ROLLBACK`;
  hold.release();
  // Its connection was closed: once the lock no longer holds it, the backend sees that and ends.
  for (let i = 0; i < 100 && (await admin`SELECT 1 FROM pg_stat_activity WHERE pid = ${pid}`).length > 0; i++) await Bun.sleep(50);
  expect(await admin`SELECT state FROM pg_stat_activity WHERE pid = ${pid}`).toEqual([] as never);
  await within(writer.write(rowsOf("cl3", 10, 10)), 5_000, "the retry");
  expect(await countRows(admin, "cl3")).toBe(20);
  await writer.close();
}, 30_000);
