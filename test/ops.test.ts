/**
 * Operating the platform: `fleet status` against the real stack and a real gateway process, and
 * the files in ops/ (alert rules unit-tested by promtool, the scrape config and the Grafana
 * dashboard checked against the metrics the code exports).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AckPolicy, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { freePort, startServiceProcess, startStack, type ServiceProcess } from "../dev";
import { testStack } from "../dev/testing";
import type { Stack } from "../dev/stack";
import type { StatusReport } from "../cli/commands/status";

const root = join(import.meta.dir, "..");
const bun = process.execPath;

async function fleetStatus(args: string[], env: Record<string, string>) {
  const proc = Bun.spawn([bun, "cli/fleet.ts", "status", ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

describe("fleet status", () => {
  let stack: Stack;
  let gateway: ServiceProcess;
  const stream = `STATUS_${process.pid}`;
  let env: Record<string, string>;

  beforeAll(async () => {
    stack = await testStack(["nats", "redis", "postgres"]);
    // A stream of its own with both durable consumers and 5 messages nobody read: pending is 5.
    const nc = await connect({ servers: stack.natsUrl });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: stream, subjects: [`status-test.${process.pid}.>`] });
    for (const durable of ["tracker", "history"])
      await jsm.consumers.add(stream, { durable_name: durable, ack_policy: AckPolicy.Explicit });
    for (let i = 0; i < 5; i++) await nc.request(`status-test.${process.pid}.x`, new TextEncoder().encode(String(i)));
    await nc.close();
    gateway = await startServiceProcess({ service: "gateway", env: { ...stack.env(), GATEWAY_PORT: String(await freePort()) } });
    env = {
      ...stack.env(),
      NATS_MONITOR_URL: stack.natsMonitorUrl,
      FLEET_ADMIN_URLS: `gateway-1=${gateway.adminUrl}`,
    };
  }, 30_000);

  afterAll(async () => {
    await gateway?.stop();
    const nc = await connect({ servers: stack.natsUrl });
    await (await jetstreamManager(nc)).streams.delete(stream).catch(() => {});
    await nc.close();
  });

  test("status - a healthy stack exits 0 and lists the node, stream leader, consumers, instance and stores", async () => {
    const out = await fleetStatus(["--stream", stream], env);
    expect(out.stderr).toBe("");
    expect(out.code).toBe(0);
    const node = `fleet-stack-${new URL(stack.natsUrl).port}`;
    expect(out.stdout).toStartWith("fleet status: healthy");
    expect(out.stdout).toContain(node);
    expect(out.stdout).toContain(`stream ${stream}: ok, R1, leader ${node}`);
    expect(out.stdout).toMatch(/tracker\s+ok\s+5\s+0/);
    expect(out.stdout).toMatch(/gateway-1\s+ok\s+gateway\s+0\.1\.0/);

    const json = await fleetStatus(["--stream", stream, "--json"], env);
    expect(json.code).toBe(0);
    const report = JSON.parse(json.stdout) as StatusReport;
    expect(report.healthy).toBe(true);
    expect(report.nodes.map((n) => [n.name, n.state, n.version])).toEqual([[node, "ok", expect.stringMatching(/^2\./)]]);
    expect(report.stream?.leader).toBe(node);
    expect(report.consumers.map((c) => [c.name, c.pending, c.ackPending])).toEqual([
      ["tracker", 5, 0],
      ["history", 5, 0],
    ]);
    expect(report.services[0]).toMatchObject({ name: "gateway-1", state: "ok", service: "gateway", version: "0.1.0" });
    expect(report.stores.map((s) => [s.name, s.state])).toEqual([
      ["redis", "ok"],
      ["postgres", "ok"],
    ]);
  }, 20_000);

  test("status - a stopped Redis, a dead instance or a missing stream exits 1 naming each, with what to do", async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    await stack.stopService("redis");
    try {
      const out = await fleetStatus(["--stream", `${stream}_NONE`], {
        ...env,
        FLEET_ADMIN_URLS: `gateway-1=${gateway.adminUrl},gateway-2=${dead}`,
      });
      expect(out.code).toBe(1);
      expect(out.stdout).toStartWith("fleet status: UNHEALTHY");
      expect(out.stdout).toContain(`FAIL redis: unreachable at ${stack.redisUrl}`);
      expect(out.stdout).toContain("start it or fix REDIS_URL");
      expect(out.stdout).toContain("FAIL service gateway-2: admin address unreachable");
      expect(out.stdout).toContain(`FAIL stream ${stream}_NONE: stream not found: start a gateway, which creates it`);
      expect(out.stdout).not.toContain("FAIL service gateway-1");
      expect(out.stdout).not.toContain("FAIL postgres");
    } finally {
      await stack.startService("redis");
    }
  }, 20_000);

  test("status - --help explains it and a wrong option exits 2", async () => {
    const out = await fleetStatus(["--help"], {});
    expect(out.code).toBe(0);
    expect(out.stdout).toContain("usage: fleet status");
    expect(out.stdout).toContain("NATS_MONITOR_URL");
    const bad = await fleetStatus(["--bogus"], {});
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--bogus");
  });
});

/** promtool from Debian's prometheus package (`bash scripts/ensure-system.sh promtool`, which npm test runs). */
function promtool(args: string[], cwd = join(root, "ops", "prometheus")) {
  const r = spawnSync("promtool", args, { cwd, encoding: "utf8" });
  if (r.error) throw new Error(`promtool not found (${r.error.message}): run "bash scripts/ensure-system.sh promtool"`);
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

/** Every metric name the services' code registers: a literal string with one of our prefixes. */
function metricsInCode(): Set<string> {
  const names = new Set<string>();
  for (const dir of ["gateway", "tracker", "history", "archiver", "lib"]) {
    for (const file of readdirSync(join(root, dir), { recursive: true, encoding: "utf8" })) {
      if (!file.endsWith(".ts") || file.endsWith(".test.ts") || file.includes("test/")) continue;
      const text = readFileSync(join(root, dir, file), "utf8");
      for (const m of text.matchAll(/"((?:gateway|tracker|history|archive|fleet|rpc|process|nats)_[a-z0-9_]+)"/g)) names.add(m[1]!);
    }
  }
  return names;
}

/** The metric names a PromQL expression reads (labels, grouping, ranges and function names removed). */
function metricsOf(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, "")
    .replace(/\{[^}]*\}/g, "")
    .replace(/\[[^\]]*\]/g, "")
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, "");
  const names = [...bare.matchAll(/\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()/g)].map((m) => m[1]!);
  return names.filter((n) => !["and", "or", "unless", "bool", "offset", "group_right", "group_left"].includes(n));
}

/** A histogram is read through its _bucket, _sum and _count series. */
const baseName = (n: string) => n.replace(/_(bucket|sum|count)$/, "");

describe("ops files", () => {
  const ruleExprs = [...readFileSync(join(root, "ops/prometheus/alerts.yml"), "utf8").matchAll(/expr: (>-\n(?:\s{10}.*\n)+|.*)/g)].map(
    (m) => m[1]!.replace(/^>-\n/, "").replace(/\s*\n\s*/g, " "),
  );
  // Exporters beside the servers (named in ops/prometheus/alerts.yml): their names are theirs.
  const external = /^(up|gnatsd_varz_.+|jetstream_.+|redis_.+)$/;

  test("ops - every alert fires on its state and stays quiet on a healthy cluster (promtool test rules)", () => {
    const check = promtool(["check", "rules", "alerts.yml"]);
    expect(check.out).toContain("SUCCESS: 17 rules found");
    const run = promtool(["test", "rules", "alerts.test.yml"]);
    expect(run.out).toContain("SUCCESS");
    expect(run.code).toBe(0);
    const config = promtool(["check", "config", "prometheus.yml"]);
    expect(config.out).toContain("is valid prometheus config file syntax");
    expect(config.code).toBe(0);
  });

  test("ops - alert rules read only metrics the services export or the named exporters", () => {
    const code = metricsInCode();
    const unknown = ruleExprs.flatMap(metricsOf).filter((n) => !external.test(n) && !code.has(baseName(n)));
    expect(ruleExprs.length).toBe(17);
    expect(unknown).toEqual([]);
  });

  test("ops - the Grafana dashboard is valid JSON whose every expression parses and names a known metric", () => {
    const dashboard = JSON.parse(readFileSync(join(root, "ops/grafana/fleet.json"), "utf8")) as {
      panels: { title: string; targets?: { expr: string }[] }[];
    };
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    expect(exprs.length).toBeGreaterThan(20);
    const known = new Set([...metricsInCode(), ...ruleExprs.flatMap(metricsOf)]);
    const unknown = exprs.flatMap(metricsOf).filter((n) => !external.test(n) && !known.has(n) && !known.has(baseName(n)));
    expect(unknown).toEqual([]);
    // promtool parses PromQL when it checks rules: each expression as a recording rule.
    const dir = mkdtempSync(join(tmpdir(), "fleet-ops-"));
    try {
      const rules = exprs.map((e, i) => `      - record: dashboard_expr_${i}\n        expr: ${JSON.stringify(e)}`).join("\n");
      writeFileSync(join(dir, "dashboard.yml"), `groups:\n  - name: dashboard\n    rules:\n${rules}\n`);
      const check = promtool(["check", "rules", "dashboard.yml"], dir);
      expect(check.out).toContain(`SUCCESS: ${exprs.length} rules found`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("fleet status on a 3-node cluster", () => {
  let cluster: Stack;
  const stream = `STATUS_R3_${process.pid}`;

  beforeAll(async () => {
    cluster = await startStack({ services: ["nats"], natsNodes: 3 });
    const nc = await connect({ servers: cluster.natsUrl.split(",") });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: stream, subjects: [`status-r3.${process.pid}.>`], num_replicas: 3 });
    for (let i = 0; i < 3; i++) await nc.request(`status-r3.${process.pid}.x`, new TextEncoder().encode(String(i)));
    await nc.close();
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  const monitors = () => Array.from({ length: 3 }, (_, i) => cluster.natsNode(i).monitorUrl).join(",");

  test("status - lists the three nodes and the stream's leader; a killed follower exits 1 naming it", async () => {
    const env = { NATS_URL: cluster.natsUrl, NATS_MONITOR_URL: monitors(), REDIS_URL: "", DATABASE_URL: "", FLEET_ADMIN_URLS: "" };
    const healthy = await fleetStatus(["--stream", stream, "--json"], env);
    const report = JSON.parse(healthy.stdout) as StatusReport;
    expect(healthy.code).toBe(0);
    expect(report.nodes.map((n) => n.name).sort()).toEqual(["fleet-n1", "fleet-n2", "fleet-n3"]);
    expect(report.nodes.every((n) => n.state === "ok" && n.routes === 2)).toBe(true);
    const leader = report.stream!.leader!;
    expect(report.stream).toMatchObject({ state: "ok", replicas: 3, messages: 3 });
    expect(report.stream!.peers.map((p) => p.name).sort()).toEqual(["fleet-n1", "fleet-n2", "fleet-n3"]);

    const follower = [0, 1, 2].find((i) => cluster.natsNode(i).name !== leader)!;
    const node = cluster.natsNode(follower);
    await node.stop("SIGKILL");
    const down = await fleetStatus(["--stream", stream], env);
    expect(down.stderr).toBe("");
    expect(down.code).toBe(1);
    expect(down.stdout).toContain(`FAIL nats node ${node.monitorUrl}: monitoring endpoint unreachable`);
    // Without monitoring endpoints the stream's leader tells: the silent replica, once past 5 s.
    let noMonitor = { code: 0, stdout: "", stderr: "" };
    const deadline = Date.now() + 12_000;
    while (Date.now() < deadline) {
      noMonitor = await fleetStatus(["--stream", stream], { ...env, NATS_MONITOR_URL: "" });
      if (noMonitor.stdout.includes("replica offline")) break;
      await Bun.sleep(500);
    }
    expect(noMonitor.code).toBe(1);
    expect(noMonitor.stdout).toContain(`leader ${leader}`);
    expect(noMonitor.stdout).toContain(`FAIL stream ${stream}: replica offline on ${node.name} (not heard from for over 5 s)`);
  }, 30_000);
});
