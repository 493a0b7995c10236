import { afterAll, beforeAll, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ArchiveService, PartitionState } from "../../gen/fleet/v1/archive_pb";
import {
  EXPORT_SELECT,
  openDuckDb,
  parquetSource,
  sqlString,
  localParquetFiles,
  objectKey,
  connectPostgres,
  archiveDays,
  ensureDayPartitions,
  hotDays,
  migrate,
  type ArchiveStore,
  type Sql,
  type StorageMode,
} from "../../lib/storage";
import { mintWatchToken, tokenKeys } from "../../lib/auth";
import { loadConfig, type Config } from "../../lib/config";
import { createLogger } from "../../lib/log";
import { testStack, type Stack } from "../../dev";
import { createArchiver, type Archiver } from "../archiver";

let stack: Stack;
/** Generous: a loaded 2-core machine makes DuckDB and s3rver slow; behaviour, not time, is tested. */
const SLOW = 30_000;
const opened: { close(): Promise<void> }[] = [];
let n = 0;

beforeAll(async () => {
  stack = await testStack(["postgres", "s3"]);
}, SLOW);
afterAll(async () => {
  for (const o of opened) await o.close().catch(() => {});
}, 30_000);

interface Fixture {
  config: Config;
  sql: Sql;
  /** What the database gave the schema: the same tests run on day partitions and on a hypertable. */
  mode: StorageMode;
  archiver: Archiver;
  store: ArchiveStore;
  /** Inserts `rows` points per vehicle for `vehicles` vehicles on a day (one a second from 08:00), in time order as they arrive. */
  fill(day: string, vehicles: number, rows: number): Promise<void>;
}

async function fixture(): Promise<Fixture> {
  const schema = `a_${process.pid}_${Date.now().toString(36)}_${++n}`;
  const config = loadConfig({
    ...stack.env(),
    HISTORY_DB_SCHEMA: schema,
    ARCHIVE_PREFIX: `${schema}/`,
    ARCHIVER_PORT: "0",
    ARCHIVE_INTERVAL: "0",
    HISTORY_HOT_RETENTION: "1m",
    FLEET_JWT_SECRET: "archiver-test",
    LOG_LEVEL: "error",
  });
  const sql = connectPostgres({ url: stack.databaseUrl, schema, max: 2 });
  const mode = await migrate(sql, { schema, log: createLogger({ level: "error" }) });
  if (n === 1) console.log(`archive tests: storage mode ${mode}`);
  const archiver = await createArchiver({ config, log: createLogger({ level: (process.env.TEST_LOG_LEVEL as "debug") ?? "error" }) });
  opened.push(archiver, { close: () => sql.end({ timeout: 1 }) });
  return {
    config,
    sql,
    mode,
    archiver,
    store: archiver.store,
    async fill(day, vehicles, rows) {
      await ensureDayPartitions(sql, mode, [day], schema);
      await sql`
        INSERT INTO positions (vehicle_id, recorded_at, seq, fleet_id, lat, lon, speed, heading, accuracy)
        SELECT 'v' || v, ${day}::timestamptz + interval '8 hours' + i * interval '1 second', i, 'fleet-a',
               52.5 + i * 1e-5, 13.4 + v * 1e-3, 10, 90, 5
        FROM generate_series(1, ${rows}) i, generate_series(1, ${vehicles}) v ORDER BY i, v`;
      // The day is seen as hot in this mode, so that "no longer hot" after a run means something.
      expect(await hotDays(sql, mode)).toContain(day);
    },
  };
}

async function rowsInArchive(store: ArchiveStore, day: string): Promise<number> {
  const duck = await openDuckDb();
  try {
    const files = await localParquetFiles(store, `${stack.dir}/cache`, [day]);
    const c = await duck.connect();
    const r = await c.runAndReadAll(`SELECT count(*) FROM ${parquetSource(files)}`);
    return Number(r.getRows()[0]![0]);
  } finally {
    duck.close();
  }
}

test(
  "archive - closed days go to Parquet on S3, read back, then dropped; today stays",
  async () => {
    const fx = await fixture();
    await fx.fill("2026-10-01", 3, 1000);
    await fx.fill("2026-10-02", 2, 500);
    const today = new Date().toISOString().slice(0, 10);
    await fx.fill(today, 1, 10);
    // GetTrack's packed hours (history/track-hours.ts) of an archived day go with its rows; today's stay.
    await fx.sql`INSERT INTO track_hours (vehicle_id, hour, points, light) VALUES ('v1', '2026-10-01 08:00:00+00', 1, '\\x00'), ('v1', ${today}::timestamptz, 1, '\\x00')`;
    await fx.sql`INSERT INTO track_dirty (vehicle_id, hour) VALUES ('v1', '2026-10-01 23:00:00+00')`;
    const steps: string[] = [];
    const r = await fx.archiver.run(undefined, (p) => steps.push(`${p.day}:${p.step}`));
    expect(r.days).toEqual(["2026-10-01", "2026-10-02"]);
    expect((await fx.sql`SELECT hour FROM track_hours`).map((x) => (x.hour as Date).toISOString().slice(0, 10))).toEqual([today]);
    expect((await fx.sql`SELECT count(*)::int AS n FROM track_dirty`)[0]!.n).toBe(0);
    expect(r.rows).toBe(4000);
    expect(steps).toContain("2026-10-01:write");
    expect(steps).toContain("2026-10-01:verify");
    expect(steps).toContain("2026-10-01:drop");
    expect(await hotDays(fx.sql, fx.mode)).not.toContain("2026-10-01");
    expect(await hotDays(fx.sql, fx.mode)).toContain(today);
    expect(await rowsInArchive(fx.store, "2026-10-01")).toBe(3000);
    expect(await rowsInArchive(fx.store, "2026-10-02")).toBe(1000);
    const objects = await fx.store.list("positions/");
    expect(objects.map((o) => o.key)).toEqual([objectKey("2026-10-01", 0), objectKey("2026-10-02", 0)]);
    // Sorted by vehicle and time, coordinates back in degrees.
    const duck = await openDuckDb();
    const c = await duck.connect();
    const files = await localParquetFiles(fx.store, `${stack.dir}/cache`, ["2026-10-01"]);
    const rows = (
      await c.runAndReadAll(`SELECT vehicle_id, epoch_ms(recorded_at), lat, lon, day FROM ${parquetSource(files)} LIMIT 2`)
    ).getRows();
    duck.close();
    expect(rows[0]![0]).toBe("v1");
    expect(Number(rows[0]![1])).toBe(Date.parse("2026-10-01T08:00:01Z"));
    expect(rows[0]![2]).toBeCloseTo(52.50001, 7);
    // A second run has nothing to do.
    expect((await fx.archiver.run()).days).toEqual([]);
  },
  SLOW,
);

test(
  "archive - text with newlines, quotes and commas is archived as it was, counted by rows, not lines",
  async () => {
    const fx = await fixture();
    await fx.fill("2026-10-03", 2, 100);
    await fx.sql`UPDATE positions SET order_id = ${'o-1\n"two",\r\nthree'}, fleet_id = ${"fleet\nb"} WHERE vehicle_id = 'v1'`;
    // A row larger than the export's write buffer (1 MiB).
    await fx.sql`UPDATE positions SET order_id = repeat('x', 1500000) WHERE vehicle_id = 'v2' AND seq = 50`;
    const r = await fx.archiver.run();
    expect(r.days).toEqual(["2026-10-03"]);
    expect(r.rows).toBe(200);
    expect(await hotDays(fx.sql, fx.mode)).not.toContain("2026-10-03");
    const duck = await openDuckDb();
    const c = await duck.connect();
    const files = await localParquetFiles(fx.store, `${stack.dir}/cache`, ["2026-10-03"]);
    const rows = (
      await c.runAndReadAll(`SELECT DISTINCT order_id, fleet_id FROM ${parquetSource(files)} WHERE vehicle_id = 'v1'`)
    ).getRows();
    const big = (
      await c.runAndReadAll(`SELECT seq, length(order_id) FROM ${parquetSource(files)} WHERE vehicle_id = 'v2' AND order_id <> ''`)
    ).getRows();
    duck.close();
    expect(rows).toEqual([['o-1\n"two",\r\nthree', "fleet\nb"]]);
    expect(big.map(([seq, len]) => [Number(seq), Number(len)])).toEqual([[50, 1_500_000]]);
  },
  SLOW,
);

test(
  "archive - every column of every row is in the archive as PostgreSQL held it (scaled as its own round() scales)",
  async () => {
    const fx = await fixture();
    await fx.fill("2026-10-04", 3, 400);
    // Values the fill does not make: southern and western coordinates, halves that round to even,
    // a received_at on some rows only, non-ASCII and empty text, statuses, another seq range.
    await fx.sql`
    UPDATE positions SET lat = -33.8688 - seq * 1e-6, lon = -151.2093 + seq * 0.5e-7, speed = seq * 0.125, heading = (seq * 0.005)::real,
      accuracy = 0.125, status = (seq % 5)::int2, order_id = CASE WHEN seq % 3 = 0 THEN 'Zürich-' || seq ELSE '' END,
      fleet_id = CASE WHEN vehicle_id = 'v2' THEN '' ELSE fleet_id END, seq = seq + 4000000000,
      received_at = CASE WHEN seq % 2 = 0 THEN recorded_at + interval '1.234567 second' END
    WHERE vehicle_id IN ('v2', 'v3')`;
    const expected = await fx.sql.unsafe(`SELECT ${EXPORT_SELECT}, (extract(epoch FROM recorded_at) * 1000000)::int8::text AS rec_us,
      (extract(epoch FROM received_at) * 1000000)::int8::text AS rcv_us FROM positions ORDER BY vehicle_id, recorded_at`);
    expect((await fx.archiver.run()).rows).toBe(1200);
    const duck = await openDuckDb();
    const c = await duck.connect();
    const files = await localParquetFiles(fx.store, `${stack.dir}/cache`, ["2026-10-04"]);
    const got = (
      await c.runAndReadAll(`SELECT vehicle_id, seq, fleet_id, lat_e7, lon_e7, speed_cm_s, heading_cdeg, accuracy_cm, order_id, status,
      epoch_us(recorded_at)::VARCHAR, epoch_us(received_at)::VARCHAR FROM read_parquet(${sqlString(files[0]!)})`)
    ).getRows();
    duck.close();
    const want = expected.map((r) => [
      r.vehicle_id,
      BigInt(r.seq),
      r.fleet_id,
      r.lat_e7,
      r.lon_e7,
      r.speed_cm_s,
      r.heading_cdeg,
      r.accuracy_cm,
      r.order_id,
      r.status,
      r.rec_us,
      r.rcv_us,
    ]);
    expect(got).toEqual(want);
    expect(want.filter((r) => r[11] === null).length).toBeGreaterThan(0);
    expect(want.some((r) => String(r[8]).startsWith("Zürich"))).toBe(true);
  },
  SLOW,
);

test(
  "archive - S3 down during a run: nothing dropped, the next run finishes",
  async () => {
    const fx = await fixture();
    await fx.fill("2026-09-10", 2, 2000);
    await stack.stopService("s3");
    try {
      await expect(fx.archiver.run()).rejects.toThrow();
    } finally {
      await stack.startService("s3");
    }
    expect(await hotDays(fx.sql, fx.mode)).toContain("2026-09-10");
    const [c] = await fx.sql`SELECT count(*)::int AS n FROM positions`;
    expect(c!.n).toBe(4000);
    expect((await archiveDays(fx.sql))[0]!.state).toBe("writing");
    const r = await fx.archiver.run();
    expect(r.days).toEqual(["2026-09-10"]);
    expect(await rowsInArchive(fx.store, "2026-09-10")).toBe(4000);
    expect(await hotDays(fx.sql, fx.mode)).not.toContain("2026-09-10");
  },
  SLOW * 2,
);

/** The archiver's work folders in the system's temporary folder now. */
const workFolders = () => readdirSync(tmpdir()).filter((f) => f.startsWith("fleet-archive-")).length;

test(
  "archive - S3 down while the next day's export was made ahead: nothing dropped, no work folder left, the next run finishes both",
  async () => {
    const fx = await fixture();
    await fx.fill("2026-09-20", 2, 1500);
    await fx.fill("2026-09-21", 2, 1500);
    const folders = workFolders();
    await stack.stopService("s3");
    try {
      await expect(fx.archiver.run()).rejects.toThrow();
    } finally {
      await stack.startService("s3");
    }
    expect(workFolders()).toBe(folders);
    expect(await hotDays(fx.sql, fx.mode)).toEqual(expect.arrayContaining(["2026-09-20", "2026-09-21"]));
    const r = await fx.archiver.run();
    expect(r.days).toEqual(["2026-09-20", "2026-09-21"]);
    expect(await rowsInArchive(fx.store, "2026-09-20")).toBe(3000);
    expect(await rowsInArchive(fx.store, "2026-09-21")).toBe(3000);
    expect(workFolders()).toBe(folders);
  },
  SLOW * 2,
);

test(
  "archive - a point that reaches a day after its export was made ahead is archived too (the counts under lock differ: written again)",
  async () => {
    const fx = await fixture();
    await fx.fill("2026-09-25", 2, 300);
    await fx.fill("2026-09-26", 2, 300);
    // While the first day uploads, the second's export (started once the first's was done) has long
    // finished; then a late point arrives for the second day.
    const late = { ...fx.store } as ArchiveStore;
    late.put = async (key, file) => {
      if (key === objectKey("2026-09-25", 0)) {
        await Bun.sleep(500);
        await fx.sql`INSERT INTO positions (vehicle_id, recorded_at, seq, lat, lon, speed, heading, accuracy)
                   VALUES ('late', '2026-09-26 12:00:00+00', 1, 52.5, 13.4, 0, 0, 5)`;
      }
      return fx.store.put(key, file);
    };
    const archiver = await createArchiver({ config: fx.config, store: late, log: createLogger({ level: "error" }) });
    opened.push(archiver);
    const r = await archiver.run();
    expect(r.days).toEqual(["2026-09-25", "2026-09-26"]);
    expect(r.rows).toBe(1201);
    expect(await rowsInArchive(fx.store, "2026-09-26")).toBe(601);
    expect(await hotDays(fx.sql, fx.mode)).toEqual(expect.not.arrayContaining(["2026-09-25", "2026-09-26"]));
  },
  SLOW,
);

test(
  "archive - a day half-archived by a killed run is completed, not doubled",
  async () => {
    const fx = await fixture();
    await fx.fill("2026-08-01", 2, 300);
    await fx.fill("2026-08-02", 2, 300);
    // Killed while uploading 08-01: state writing, a truncated object at its key.
    await fx.sql`INSERT INTO archive_days (day, state) VALUES ('2026-08-01', 'writing')`;
    const junk = `${stack.dir}/junk.parquet`;
    await Bun.write(junk, "PAR1 truncated");
    await fx.store.put(objectKey("2026-08-01", 0), junk);
    // Killed after 08-02 was written, before it was verified and dropped.
    await fx.archiver.run(Date.parse("2026-08-02T00:00:00Z") + 86_400_000); // archives both, then we rewind 08-02
    await fx.sql`UPDATE archive_days SET state = 'written' WHERE day = '2026-08-02'`;
    // Undo the drop of 08-02 by restoring its rows, as if the DROP never happened.
    await fx.fill("2026-08-02", 2, 300);
    const r = await fx.archiver.run();
    expect(r.days).toEqual(["2026-08-02"]);
    expect(await rowsInArchive(fx.store, "2026-08-01")).toBe(600);
    expect(await rowsInArchive(fx.store, "2026-08-02")).toBe(600);
    expect((await fx.store.list("positions/")).length).toBe(2);
    expect(await hotDays(fx.sql, fx.mode)).toEqual(expect.not.arrayContaining(["2026-08-01", "2026-08-02"]));
  },
  SLOW,
);

test(
  "archive - late points re-open a day: archived again as the next generation",
  async () => {
    const fx = await fixture();
    await fx.fill("2026-07-01", 1, 100);
    await fx.archiver.run();
    await fx.sql`INSERT INTO archive_days (day, state) VALUES ('2026-07-02', 'archived') ON CONFLICT DO NOTHING`; // unrelated row
    await ensureDayPartitions(fx.sql, fx.mode, ["2026-07-01"], fx.config.historySchema);
    await fx.sql`INSERT INTO positions (vehicle_id, recorded_at, seq, lat, lon, speed, heading, accuracy)
               VALUES ('late', '2026-07-01 12:00:00+00', 1, 52.5, 13.4, 0, 0, 5)`;
    const r = await fx.archiver.run();
    expect(r.days).toEqual(["2026-07-01"]);
    expect((await fx.store.list("positions/day=2026-07-01/")).map((o) => o.key)).toEqual([
      objectKey("2026-07-01", 0),
      objectKey("2026-07-01", 1),
    ]);
    expect(await rowsInArchive(fx.store, "2026-07-01")).toBe(101);
  },
  SLOW,
);

test(
  "archive service - admin only; lists days and streams a run's progress",
  async () => {
    const fx = await fixture();
    await fx.fill("2026-06-01", 1, 50);
    const keys = tokenKeys(fx.config);
    const client = createClient(ArchiveService, createGrpcTransport({ baseUrl: fx.archiver.url }));
    const watch = await mintWatchToken(keys, { all: true });
    const admin = await mintWatchToken(keys, { admin: true });
    const err = await client.listPartitions({}, { headers: { authorization: `Bearer ${watch}` } }).catch((e) => e);
    expect(ConnectError.from(err).code).toBe(Code.PermissionDenied);
    expect(ConnectError.from(err).rawMessage).toContain("admin token");
    const auth = { headers: { authorization: `Bearer ${admin}` } };
    let list = await client.listPartitions({}, auth);
    expect(list.partitions.find((p) => p.day === "2026-06-01")?.state).toBe(PartitionState.HOT);
    // A hot day's rows are the statistics' estimate: its partition's, or its chunks' in Timescale mode.
    await fx.sql`ANALYZE positions`;
    list = await client.listPartitions({}, auth);
    expect(list.partitions.find((p) => p.day === "2026-06-01")).toMatchObject({ state: PartitionState.HOT, rows: 50n });
    const steps: string[] = [];
    for await (const m of client.runArchive({}, auth)) steps.push(`${m.partition?.day}:${m.step}:${m.rowsDone}`);
    expect(steps).toContain("2026-06-01:drop:50");
    list = await client.listPartitions({}, auth);
    const day = list.partitions.find((p) => p.day === "2026-06-01")!;
    expect(day.state).toBe(PartitionState.ARCHIVED);
    expect(day.rows).toBe(50n);
    expect(day.location).toContain("day=2026-06-01/part-0.parquet");
  },
  SLOW,
);

test(
  "archive service - an older_than in the future (or out of range) is INVALID_ARGUMENT, and nothing is archived",
  async () => {
    const fx = await fixture();
    const client = createClient(ArchiveService, createGrpcTransport({ baseUrl: fx.archiver.url }));
    const auth = { headers: { authorization: `Bearer ${await mintWatchToken(tokenKeys(fx.config), { admin: true })}` } };
    const run = async (olderThan: { seconds: bigint; nanos: number }) => {
      try {
        for await (const _ of client.runArchive({ olderThan }, auth));
        return undefined;
      } catch (e) {
        return ConnectError.from(e);
      }
    };
    const future = await run({ seconds: BigInt(Math.floor(Date.now() / 1000) + 86_400), nanos: 0 });
    expect(future?.code).toBe(Code.InvalidArgument);
    expect(future?.rawMessage).toContain("is in the future");
    const far = await run({ seconds: 10n ** 15n, nanos: 0 });
    expect(far?.code).toBe(Code.InvalidArgument);
    expect(far?.rawMessage).toContain("out of range");
    expect((await archiveDays(fx.sql)).length).toBe(0);
  },
  SLOW,
);

test(
  "archive - a day exported in page ranges at once (rows in arrival order) is one file sorted by vehicle and time",
  async () => {
    const fx = await fixture();
    await fx.fill("2026-05-01", 9, 7000); // 63,000 rows: also past where a paused COPY stream once stalled
    const r = await fx.archiver.run();
    expect(r.rows).toBe(63_000);
    const duck = await openDuckDb();
    const c = await duck.connect();
    const files = await localParquetFiles(fx.store, `${stack.dir}/cache`, ["2026-05-01"]);
    const [row] = (
      await c.runAndReadAll(`
      SELECT count(*), count(*) FILTER (WHERE prev IS NOT NULL AND (vehicle_id < prev_v OR (vehicle_id = prev_v AND recorded_at <= prev))) AS unsorted
      FROM (SELECT vehicle_id, recorded_at, lag(vehicle_id) OVER () AS prev_v, lag(recorded_at) OVER () AS prev FROM read_parquet(${JSON.stringify(files[0]).replaceAll('"', "'")}))`)
    ).getRows();
    duck.close();
    expect(Number(row![0])).toBe(63_000);
    expect(Number(row![1])).toBe(0);
  },
  SLOW,
);
