import { afterAll, beforeAll, expect, test } from "bun:test";
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import Redis from "ioredis";
import { testStack, type Stack } from "../dev";
import { createLeader, postgresLock, redisLease, type Hold, type Leader } from "./leader";
import { createLogger } from "./log";
import { createRegistry } from "./metrics";
import { connectPostgres, lockKey, type Sql } from "./storage";

const INTERVAL = 150;
let stack: Stack;
let sql: Sql;
let redis: Redis;
const open: Leader[] = [];
const children: ChildProcess[] = [];
let n = 0;
const unique = (what: string) => `leader-test-${process.pid}-${Date.now()}-${what}-${++n}`;

beforeAll(async () => {
  stack = await testStack(["postgres", "redis"]);
  sql = connectPostgres({ url: stack.databaseUrl, max: 2 });
  redis = new Redis(stack.redisUrl);
});
afterAll(async () => {
  for (const c of children) c.kill("SIGKILL");
  await Promise.all(open.map((l) => l.close()));
  await sql.end({ timeout: 1 });
  redis.disconnect();
});

/** A leader whose log lines are kept in `lines`. */
function leader(hold: Hold) {
  const lines: string[] = [];
  const registry = createRegistry("leader-test", { processMetrics: false });
  const l = createLeader({
    name: "job",
    intervalMs: INTERVAL,
    log: createLogger({ write: (line) => lines.push(line) }),
    registry,
    ...hold,
  });
  open.push(l);
  return { l, lines, registry };
}

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < timeoutMs) {
    if (await check()) return performance.now() - t0;
    await Bun.sleep(10);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Samples both for `ms`: never two leaders at once; resolves with how often each led. */
async function neverBoth(a: Leader, b: Leader, ms: number): Promise<[number, number]> {
  let na = 0;
  let nb = 0;
  const end = performance.now() + ms;
  while (performance.now() < end) {
    expect(a.isLeader() && b.isLeader()).toBe(false);
    if (a.isLeader()) na++;
    if (b.isLeader()) nb++;
    await Bun.sleep(5);
  }
  return [na, nb];
}

/** A holder in a process of its own (to be SIGKILLed); resolves once it logged "became leader". */
async function holderProcess(kind: "postgres" | "redis", key: string): Promise<ChildProcess> {
  const hold =
    kind === "postgres"
      ? `L.postgresLock({ url: process.env.URL, key: BigInt(process.env.KEY), applicationName: "leader child" })`
      : `L.redisLease({ redis: new (await import("ioredis")).default(process.env.URL), key: process.env.KEY, ttlMs: ${3 * INTERVAL} })`;
  const script = `const L = await import(${JSON.stringify(join(import.meta.dir, "leader.ts"))});
const { createLogger } = await import(${JSON.stringify(join(import.meta.dir, "log.ts"))});
L.createLeader({ name: "job", intervalMs: ${INTERVAL}, log: createLogger({ write: (l) => console.log(l) }), ...${hold} });`;
  const child = spawn(process.execPath, ["-e", script], {
    cwd: join(import.meta.dir, ".."),
    env: { ...process.env, URL: kind === "postgres" ? stack.databaseUrl : stack.redisUrl, KEY: key },
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.push(child);
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("the child never became leader")), 10_000);
    child.stdout!.on("data", (d: Buffer) => {
      if (d.toString().includes("became leader")) {
        clearTimeout(t);
        resolve();
      }
    });
  });
  return child;
}

const pgHold = (name: string) => postgresLock({ url: stack.databaseUrl, key: lockKey(name), applicationName: name.slice(0, 60) });

test("leader - postgres: of two instances one leads; when it gives up the other leads within the interval", async () => {
  const name = unique("pg");
  const a = leader(pgHold(name));
  const b = leader(pgHold(name));
  await until(() => a.l.isLeader() || b.l.isLeader(), "a leader");
  await neverBoth(a.l, b.l, 4 * INTERVAL);
  const [first, second] = a.l.isLeader() ? [a, b] : [b, a];
  expect(first.lines.some((l) => l.includes('"became leader"'))).toBe(true);
  expect(await first.registry.getSingleMetricAsString("fleet_leader")).toContain('fleet_leader{job="job",service="leader-test"} 1');
  expect(await second.registry.getSingleMetricAsString("fleet_leader")).toContain('fleet_leader{job="job",service="leader-test"} 0');
  await first.l.close();
  const took = await until(() => second.l.isLeader(), "the other to lead");
  expect(took).toBeLessThan(INTERVAL + 250);
});

test("leader - postgres: a leader killed (SIGKILL) frees the lock with its connection; another leads within the interval", async () => {
  const name = unique("pgkill");
  const child = await holderProcess("postgres", lockKey(name).toString());
  const b = leader(pgHold(name));
  await Bun.sleep(3 * INTERVAL); // the child holds it: b never takes it
  expect(b.l.isLeader()).toBe(false);
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await exited;
  const took = await until(() => b.l.isLeader(), "the survivor to lead");
  expect(took).toBeLessThan(INTERVAL + 500);
});

test("leader - postgres: a leader whose connection is cut says lost leadership, and one instance leads again", async () => {
  const name = unique("pgcut");
  const a = leader(pgHold(name));
  await until(() => a.l.isLeader(), "a to lead");
  const [cut] =
    await sql`SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = ${name.slice(0, 60)}`;
  expect(cut!.n).toBe(1);
  await until(() => a.lines.some((l) => l.includes('"lost leadership"')), "lost leadership");
  await until(() => a.l.isLeader(), "a to lead again on a new connection");
  const [held] = await sql`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = ${name.slice(0, 60)}`;
  expect(held!.n).toBe(1);
});

test("leader - redis: of two instances one leads; a leader killed (SIGKILL) is replaced once its lease expires", async () => {
  const key = unique("lease");
  const child = await holderProcess("redis", key);
  const owner = await redis.get(key);
  expect(owner).toBeTruthy();
  const b = leader(redisLease({ redis, key, ttlMs: 3 * INTERVAL }));
  await Bun.sleep(4 * INTERVAL); // the child renews: b never takes it
  expect(b.l.isLeader()).toBe(false);
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await exited;
  const took = await until(() => b.l.isLeader(), "the survivor to lead");
  // The lease runs out 3 intervals after the child's last renewal at most; b tries every interval.
  expect(took).toBeLessThan(4 * INTERVAL + 300);
  expect(await redis.get(key)).not.toBe(owner);
});

test("leader - redis: a holder whose lease was taken over neither renews nor deletes the new holder's lease", async () => {
  const key = unique("cad");
  const a = redisLease({ redis, key, ttlMs: 60_000, owner: "a" });
  const b = redisLease({ redis, key, ttlMs: 60_000, owner: "b" });
  expect(await a.acquire()).toBe(true);
  expect(await b.acquire()).toBe(false);
  await redis.del(key); // a's lease expired (a stalled past its TTL)
  expect(await b.acquire()).toBe(true);
  expect(await a.renew()).toBe(false);
  await a.release();
  expect(await redis.get(key)).toBe("b");
  await b.release();
  expect(await redis.get(key)).toBeNull();
});
