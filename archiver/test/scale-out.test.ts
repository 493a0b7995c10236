import { afterAll, beforeAll, expect, test } from "bun:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ArchiveService } from "../../gen/fleet/v1/archive_pb";
import { mintWatchToken, tokenKeys } from "../../lib/auth";
import { loadConfig } from "../../lib/config";
import { createLogger } from "../../lib/log";
import { archiveDays, connectPostgres, ensureDayPartitions, migrate, objectKey, type Sql, type StorageMode } from "../../lib/storage";
import { testStack, type Stack } from "../../dev";
import { createArchiver, type Archiver } from "../archiver";

const SLOW = 30_000;
const INTERVAL = 150;
let stack: Stack;
const opened: { close(): Promise<void> }[] = [];
let n = 0;

beforeAll(async () => {
  stack = await testStack(["postgres", "s3"]);
}, SLOW);
afterAll(async () => {
  for (const o of opened) await o.close().catch(() => {});
}, 30_000);

/** Two archivers on one schema and archive, and a way to fill a day. */
async function twoArchivers(env: Record<string, string> = {}) {
  const schema = `as_${process.pid}_${Date.now().toString(36)}_${++n}`;
  const config = loadConfig({
    ...stack.env(),
    HISTORY_DB_SCHEMA: schema,
    ARCHIVE_PREFIX: `${schema}/`,
    ARCHIVER_PORT: "0",
    ARCHIVE_INTERVAL: "0",
    HISTORY_HOT_RETENTION: "1m",
    FLEET_JWT_SECRET: "archiver-test",
    FLEET_LEADER_INTERVAL: `${INTERVAL}ms`,
    LOG_LEVEL: "error",
    ...env,
  });
  const sql: Sql = connectPostgres({ url: stack.databaseUrl, schema, max: 2 });
  const mode: StorageMode = await migrate(sql, { schema, log: createLogger({ level: "error" }) });
  const start = async () => {
    const a = await createArchiver({ config, log: createLogger({ level: (process.env.TEST_LOG_LEVEL as "debug") ?? "error" }) });
    opened.push(a);
    return a;
  };
  const a = await start();
  const b = await start();
  opened.push({ close: () => sql.end({ timeout: 1 }) });
  return {
    config,
    sql,
    a,
    b,
    async fill(day: string, rows: number) {
      await ensureDayPartitions(sql, mode, [day], schema);
      await sql`
        INSERT INTO positions (vehicle_id, recorded_at, seq, fleet_id, lat, lon, speed, heading, accuracy)
        SELECT 'v' || v, ${day}::timestamptz + interval '8 hours' + i * interval '1 second', i, 'fleet-a', 52.5, 13.4, 10, 90, 5
        FROM generate_series(1, ${rows}) i, generate_series(1, 2) v`;
    },
  };
}

/** The value of one series of a metric in this archiver's registry (0 when it has no such series). */
async function runsOf(archiver: Archiver, result: string): Promise<number> {
  const text = await archiver.registry.getSingleMetricAsString("archive_runs_total");
  return Number(new RegExp(`^archive_runs_total\\{[^}]*result="${result}"[^}]*\\} (\\S+)$`, "m").exec(text)?.[1] ?? 0);
}

test(
  "archive - RunArchive on two archivers at once: each day is archived once (the second run is UNAVAILABLE, or finds nothing left)",
  async () => {
    const fx = await twoArchivers();
    const days = ["2026-09-01", "2026-09-02", "2026-09-03"];
    for (const d of days) await fx.fill(d, 2000);
    const auth = { headers: { authorization: `Bearer ${await mintWatchToken(tokenKeys(fx.config), { admin: true })}` } };
    const call = async (archiver: Archiver) => {
      const client = createClient(ArchiveService, createGrpcTransport({ baseUrl: archiver.url }));
      const drops: string[] = [];
      try {
        for await (const m of client.runArchive({}, auth)) if (m.step === "drop") drops.push(m.partition!.day);
        return { drops };
      } catch (err) {
        return { drops, err: ConnectError.from(err) };
      }
    };
    const [ra, rb] = await Promise.all([call(fx.a), call(fx.b)]);
    // Each day dropped by exactly one of the two runs.
    expect([...ra.drops, ...rb.drops].sort()).toEqual(days);
    for (const r of [ra, rb]) {
      if (r.err) {
        expect(r.err.code).toBe(Code.Unavailable);
        expect(r.err.rawMessage).toBe("another archive run is in progress: wait for it to finish");
        expect(r.drops).toEqual([]);
      }
    }
    expect((await archiveDays(fx.sql)).filter((d) => days.includes(d.day)).map((d) => [d.day, d.state, d.rows])).toEqual(
      days.map((d) => [d, "archived", 4000]),
    );
    const objects = (await fx.a.store.list("positions/")).map((o) => o.key).sort();
    expect(objects).toEqual(days.map((d) => objectKey(d, 0)));
  },
  SLOW,
);

test(
  "archive - timed runs happen in one archiver, the leader; when it stops, the other takes them over",
  async () => {
    const fx = await twoArchivers({ ARCHIVE_INTERVAL: "100ms" });
    const lead = async () => {
      for (const end = Date.now() + 5000; Date.now() < end; await Bun.sleep(10)) {
        if (fx.a.leader.isLeader() || fx.b.leader.isLeader()) return;
      }
      throw new Error("no archiver leads");
    };
    await lead();
    await Bun.sleep(6 * INTERVAL);
    expect(fx.a.leader.isLeader() && fx.b.leader.isLeader()).toBe(false);
    const [first, second] = fx.a.leader.isLeader() ? [fx.a, fx.b] : [fx.b, fx.a];
    expect(await runsOf(first, "ok")).toBeGreaterThan(0);
    // The other never ran (no run found the lock taken, none ran beside).
    expect(await runsOf(second, "ok")).toBe(0);
    expect(await runsOf(second, "busy")).toBe(0);

    await first.close();
    await fx.fill("2026-09-10", 100);
    // The day shows as archived before the run that did it has returned (and counted itself): wait for both.
    for (const end = Date.now() + 10_000; Date.now() < end; await Bun.sleep(20)) {
      const archived = (await archiveDays(fx.sql)).some((d) => d.day === "2026-09-10" && d.state === "archived");
      if (archived && (await runsOf(second, "ok")) > 0) break;
    }
    expect((await archiveDays(fx.sql)).find((d) => d.day === "2026-09-10")?.state).toBe("archived");
    expect(second.leader.isLeader()).toBe(true);
    expect(await runsOf(second, "ok")).toBeGreaterThan(0);
  },
  SLOW,
);
