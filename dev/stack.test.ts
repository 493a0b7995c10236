import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { connect as tcpConnect, createServer } from "node:net";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import Redis from "ioredis";
import postgres from "postgres";
import { freePort } from "./free-port";
import { startStack, StackError, type Stack } from "./stack";
import { testStack } from "./testing";

const portOf = (url: string) => Number(new URL(url).port);

/** True when something accepts TCP connections on 127.0.0.1:port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("free-port", () => {
  test("free-port - returns a port that can be bound on 127.0.0.1", async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => resolve());
    });
    server.close();
  });
});

describe("stack", () => {
  const extra: Stack[] = [];
  afterAll(async () => {
    await Promise.all(extra.map((s) => s.stop()));
  });

  test("stack - every service answers", async () => {
    const stack = await testStack();
    expect(stack.env()).toMatchObject({
      NATS_URL: stack.natsUrl,
      REDIS_URL: stack.redisUrl,
      DATABASE_URL: stack.databaseUrl,
      S3_ENDPOINT: stack.s3.endpoint,
    });

    const nc = await connect({ servers: stack.natsUrl });
    try {
      const info = await (await jetstreamManager(nc)).getAccountInfo();
      expect(info.limits).toBeDefined();
    } finally {
      await nc.close();
    }

    const redis = new Redis(stack.redisUrl, { lazyConnect: true });
    try {
      await redis.connect();
      expect(await redis.ping()).toBe("PONG");
    } finally {
      redis.disconnect();
    }

    const sql = postgres(stack.databaseUrl, { max: 1, onnotice: () => {} });
    try {
      const [row] = await sql<{ one: number; db: string }[]>`select 1 as one, current_database() as db`;
      expect(row).toEqual({ one: 1, db: "fleet" });
    } finally {
      await sql.end();
    }

    const s3 = new Bun.S3Client(stack.s3);
    const key = `stack-test/${crypto.randomUUID()}.txt`;
    await s3.write(key, "hello archive");
    expect(await s3.file(key).text()).toBe("hello archive");
    const listed = await s3.list({ prefix: "stack-test/" });
    expect(listed.contents?.map((o) => o.key)).toContain(key);
    await s3.delete(key);
  });

  test("stack - a nats-server restart keeps a JetStream stream's messages", async () => {
    const stack = await startStack({ services: ["nats"], env: {} });
    extra.push(stack);
    const port = portOf(stack.natsUrl);
    let nc = await connect({ servers: stack.natsUrl });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "STACK_RESTART", subjects: ["stack.restart.>"] });
    const js = jetstream(nc);
    for (let i = 0; i < 3; i++) await js.publish("stack.restart.a", `m${i}`);
    await nc.close();

    const before = stack.pid("nats")!;
    await stack.stopService("nats", "SIGKILL");
    expect(alive(before)).toBe(false);
    expect(await listening(port)).toBe(false);
    await stack.startService("nats");
    expect(stack.pid("nats")).not.toBe(before);
    expect(portOf(stack.natsUrl)).toBe(port);

    nc = await connect({ servers: stack.natsUrl });
    try {
      const info = await (await jetstreamManager(nc)).streams.info("STACK_RESTART");
      expect(info.state.messages).toBe(3);
    } finally {
      await nc.close();
    }

    // a clean stop keeps them too
    await stack.stopService("nats");
    await stack.startService("nats");
    nc = await connect({ servers: stack.natsUrl });
    try {
      expect((await (await jetstreamManager(nc)).streams.info("STACK_RESTART")).state.messages).toBe(3);
    } finally {
      await nc.close();
    }
  });

  test("stack - a PostgreSQL crash and restart keeps committed rows", async () => {
    const stack = await startStack({ services: ["postgres"], env: {} });
    extra.push(stack);
    let sql = postgres(stack.databaseUrl, { max: 1, onnotice: () => {} });
    await sql`create table t (v int)`;
    await sql`insert into t values (42)`;
    await sql.end();
    await stack.stopService("postgres", "SIGKILL");
    await stack.startService("postgres");
    sql = postgres(stack.databaseUrl, { max: 1, onnotice: () => {} });
    try {
      const rows = await sql<{ v: number }[]>`select v from t`;
      expect(rows.map((r) => r.v)).toEqual([42]);
    } finally {
      await sql.end();
    }
  });

  test("stack - uses a server given by the environment instead of starting one", async () => {
    const shared = await testStack(["redis"]);
    const stack = await startStack({ services: ["redis", "nats"], env: { REDIS_URL: shared.redisUrl } });
    extra.push(stack);
    expect(stack.redisUrl).toBe(shared.redisUrl);
    expect(stack.pid("redis")).toBeUndefined();
    expect(stack.pid("nats")).toBeGreaterThan(0);
    expect(existsSync(join(stack.dir, "logs", "redis.log"))).toBe(false);
    expect(stack.env().REDIS_URL).toBe(shared.redisUrl);
    expect(stack.databaseUrl).toBe("");
    expect(stack.env().DATABASE_URL).toBeUndefined();
    await expect(stack.stopService("redis")).rejects.toThrow(StackError);
  });

  test("stack - stop() ends the servers and removes the folder", async () => {
    const stack = await startStack({ services: ["redis", "s3"], env: {} });
    const pids = [stack.pid("redis")!, stack.pid("s3")!];
    await stack.stop();
    expect(pids.map(alive)).toEqual([false, false]);
    expect(existsSync(stack.dir)).toBe(false);
  });

  test("stack - a server that dies at start fails with its log tail", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fleet-stack-test-"));
    try {
      mkdirSync(join(dir, "postgres"));
      writeFileSync(join(dir, "postgres", "PG_VERSION"), "7\n"); // a data folder no postgres can open
      const started = startStack({ services: ["postgres"], dir, env: {}, readyTimeoutMs: 10_000 });
      await expect(started).rejects.toThrow(/postgres exited before it was ready; last lines of .*postgres\.log:\n.*postgresql\.conf/s);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  /** A child process that starts a stack of `services` and stays; resolves with what it started. */
  async function stackInChild(
    services: string[],
  ): Promise<{ child: ReturnType<typeof Bun.spawn>; dir: string; pids: number[]; ports: number[] }> {
    const script = `
      import { startStack } from ${JSON.stringify(join(import.meta.dir, "stack.ts"))};
      const names = ${JSON.stringify(services)};
      const s = await startStack({ services: names, env: {} });
      const urls = { nats: s.natsUrl, redis: s.redisUrl, postgres: s.databaseUrl, s3: s.s3.endpoint };
      console.log(JSON.stringify({ dir: s.dir, pids: names.map((n) => s.pid(n)), ports: names.map((n) => Number(new URL(urls[n]).port)) }));
      setInterval(() => {}, 1000);
    `;
    const child = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "inherit" });
    const reader = (child.stdout as ReadableStream<Uint8Array>).getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`child ended before it started the stack: ${text}`);
      text += new TextDecoder().decode(value);
    }
    return { child, ...(JSON.parse(text) as { dir: string; pids: number[]; ports: number[] }) };
  }

  test("stack - SIGKILL of the parent stops its servers and removes the folder", async () => {
    const { child, dir, pids, ports } = await stackInChild(["nats", "redis", "postgres", "s3"]);
    expect(pids.every((p) => p > 0 && alive(p))).toBe(true);

    child.kill("SIGKILL");
    await child.exited;
    const deadline = Date.now() + 8000;
    let state = { pids: pids.map(alive), ports: await Promise.all(ports.map(listening)), dir: existsSync(dir) };
    while (Date.now() < deadline && (state.pids.some(Boolean) || state.ports.some(Boolean) || state.dir)) {
      await Bun.sleep(100);
      state = { pids: pids.map(alive), ports: await Promise.all(ports.map(listening)), dir: existsSync(dir) };
    }
    expect(state).toEqual({ pids: [false, false, false, false], ports: [false, false, false, false], dir: false });
  }, 30_000);

  test("stack - servers left by a parent killed with its watchdog are stopped by the next stack", async () => {
    const { child, dir, pids } = await stackInChild(["redis", "postgres"]);
    // What \`bun test\` does to a timed-out test's processes: the watchdog goes too.
    const watchdogs = readdirSync("/proc")
      .filter((d) => /^\d+$/.test(d))
      .filter((d) => {
        try {
          const argv = readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0");
          return argv.includes("fleet-stack-watchdog") && argv.includes(String(child.pid));
        } catch {
          return false;
        }
      })
      .map(Number);
    expect(watchdogs.length).toBe(1);
    process.kill(watchdogs[0]!, "SIGKILL");
    child.kill("SIGKILL");
    await child.exited;
    await Bun.sleep(300);
    expect(pids.map(alive)).toEqual([true, true]);

    const next = await startStack({ services: ["redis"], env: {} });
    try {
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline && pids.some(alive)) await Bun.sleep(50);
      expect({ pids: pids.map(alive), dir: existsSync(dir) }).toEqual({ pids: [false, false], dir: false });
    } finally {
      await next.stop();
    }
  }, 30_000);
});
