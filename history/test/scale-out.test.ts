import { afterAll, beforeAll, expect, test } from "bun:test";
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { nanos } from "@nats-io/nats-core";
import { AckPolicy, DeliverPolicy } from "@nats-io/jetstream";
import { CONSUMERS } from "../../lib/nats";
import { DAY_MS, dayOf, hotDays, partitionName } from "../../lib/storage";
import type { History } from "../history";
import { countRows, eventually, historyFixture, pointAt, SECRET, TEST_STREAM_MAX_BYTES, type HistoryFixture } from "./helpers";

const INTERVAL = 150;
let fx: HistoryFixture;
const children: ChildProcess[] = [];
beforeAll(async () => {
  fx = await historyFixture({ FLEET_LEADER_INTERVAL: `${INTERVAL}ms`, HISTORY_TRACK_PACK_INTERVAL: "100ms" });
  // Redelivery of what a killed instance held after 2 s, not the default 30 s.
  await fx.nats.jsm.consumers.add(fx.stream, {
    durable_name: CONSUMERS.history,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(2000),
    max_ack_pending: 2000,
  });
}, 60_000); // the test stack's servers start here (seconds on a busy machine; bun's hook default is 5 s)
afterAll(async () => {
  for (const c of children) c.kill("SIGKILL");
  await fx?.close();
}, 30_000);

const T0 = Date.UTC(2026, 10, 21, 10, 0, 0);

async function metric(h: History, name: string): Promise<number> {
  const text = await h.registry.getSingleMetricAsString(name);
  return Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text)?.[1] ?? Number.NaN);
}

/** A history instance in its own process on the fixture's stream and schema; resolves once it listens. */
async function historyProcess(): Promise<ChildProcess> {
  const child = spawn(process.execPath, [join(import.meta.dir, "history-child.ts")], {
    cwd: join(import.meta.dir, "../.."),
    env: {
      ...process.env,
      ...fx.stack.env(),
      FLEET_JWT_SECRET: SECRET,
      HISTORY_PORT: "0",
      HISTORY_DB_SCHEMA: fx.schema,
      FLEET_STREAM_MAX_BYTES: String(TEST_STREAM_MAX_BYTES),
      FLEET_LEADER_INTERVAL: `${INTERVAL}ms`,
      LOG_LEVEL: "info",
      TEST_STREAM: fx.stream,
      TEST_SUBJECT_PREFIX: fx.subjectPrefix,
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  children.push(child);
  let tail = "";
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`the history process did not start:\n${tail}`)), 20_000);
    child.stderr!.on("data", (d: Buffer) => {
      tail = (tail + d.toString()).slice(-4000);
      if (tail.includes('"msg":"listening"')) {
        clearTimeout(t);
        resolve();
      }
    });
  });
  return child;
}

test("leader - of two history instances one packs track hours and makes partitions ahead; it stops, the other takes over within the interval", async () => {
  const a = await fx.start();
  const b = await fx.start();
  await eventually(async () => a.leader.isLeader() || b.leader.isLeader(), "a leader", 5000);
  for (const end = Date.now() + 6 * INTERVAL; Date.now() < end; await Bun.sleep(5)) {
    expect(a.leader.isLeader() && b.leader.isLeader()).toBe(false);
  }
  const [first, second] = a.leader.isLeader() ? [a, b] : [b, a];
  expect(await metric(first, "history_track_pack_runs_total")).toBeGreaterThan(0);
  expect(await metric(second, "history_track_pack_runs_total")).toBe(0);
  expect(await metric(first, "fleet_leader")).toBe(1);
  expect(await metric(second, "fleet_leader")).toBe(0);

  // A partition ahead gone: the leader that takes over makes it again.
  const ahead = dayOf(Date.now() + fx.config.historyPartitionsAhead * DAY_MS);
  if (first.mode === "plain") {
    expect(await hotDays(fx.sql, "plain")).toContain(ahead);
    await fx.sql.unsafe(`DROP TABLE ${partitionName(ahead)}`);
  }
  await first.close();
  const t0 = Date.now();
  await eventually(async () => second.leader.isLeader(), "the other instance to lead", 5000);
  expect(Date.now() - t0).toBeLessThan(INTERVAL + 500);
  await eventually(async () => (await metric(second, "history_track_pack_runs_total")) > 0, "the new leader to pack", 2000);
  if (second.mode === "plain")
    await eventually(async () => (await hotDays(fx.sql, "plain")).includes(ahead), "the partition ahead again", 2000);
  await second.close();
}, 20_000);

test("writer - two processes on one consumer, one SIGKILLed mid-transaction: every point stored once, counted once", async () => {
  const survivor = await fx.start();
  const child = await historyProcess();
  let published = 0;
  let stop = false;
  const pump = (async () => {
    for (let m = 0; !stop; m++) {
      await fx.publish(Array.from({ length: 20 }, (_, i) => pointAt(`k${m % 5}`, T0 + (m * 20 + i) * 1000, m * 20 + i + 1)));
      published += 20;
      await Bun.sleep(2);
    }
  })();
  // Kill it while one of its write transactions is open.
  const pattern = `^history [^ ]+-${child.pid}-`;
  let caught = false;
  for (const end = Date.now() + 10_000; !caught && Date.now() < end; ) {
    const [r] = await fx.sql`SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE application_name ~ ${pattern} AND state IN ('active', 'idle in transaction') AND xact_start IS NOT NULL`;
    if (r!.n > 0) caught = true;
  }
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await exited;
  expect(caught).toBe(true);
  await Bun.sleep(300);
  stop = true;
  await pump;
  await eventually(async () => (await countRows(fx.sql, "k%")) === published, `all ${published} k rows`, 15_000);
  const [r] = await fx.sql`SELECT sum(points)::int AS points FROM positions_rollup WHERE vehicle_id LIKE 'k%'`;
  expect(r!.points).toBe(published);
  expect(await metric(survivor, "history_rows_written_total")).toBeGreaterThan(0);
}, 30_000);
