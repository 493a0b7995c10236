/**
 * The gateway's resident memory per connected vehicle on its vehicle port (issue 18), as `bench
 * platform` counts it, without the rest of the platform: NATS (dev's stack), G gateway processes on
 * one vehicle port (SO_REUSEPORT, FLEET_MAX_CONNECTIONS 19000, as the bench), N vehicles from
 * ceil(N / 10,000) client processes (vehicles.ts: each vehicle its own connection from 127.0.0.(2+i),
 * its own token, one Sync with one point acked). RSS of the gateways before, 2 s after the last
 * vehicle's ack (no forced GC: the bench's figure), and after a forced GC (the probe's SIGUSR2, see
 * gateway/main.ts), per vehicle; then the JS heap census by object type per vehicle, and with
 * --snapshot the heap's bytes by class per vehicle.
 *
 * Run: flock /tmp/fleet-bench.lock node_modules/.bin/bun experiments/h2lite/mem/gateway-probe.ts --vehicles 20000
 * Options: --vehicles N (5000), --gateways G (ceil(N / 15,000), as the bench), --every S (0: one point
 * only; 6: a point per vehicle every 6 s, as the bench), --wait S (2), --snapshot.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { freePort, startServiceProcess, startStack, type ServiceProcess } from "../../../dev";
import { tokenKeys } from "../../../lib/auth";
import { loadConfig } from "../../../lib/config";

const { values } = parseArgs({
  options: {
    vehicles: { type: "string", default: "5000" },
    gateways: { type: "string" },
    every: { type: "string", default: "0" },
    wait: { type: "string", default: "2" },
    snapshot: { type: "boolean", default: false },
  },
});
const N = Number(values.vehicles);
const G = Number(values.gateways ?? Math.max(1, Math.ceil(N / 15_000)));
const root = join(import.meta.dir, "../../..");
const bun = process.execPath;
const rssOf = (pid: number) => Number(/VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) * 1024;
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");

type Census = {
  rss: number;
  memory: Record<string, number>;
  bmalloc: Record<string, number>;
  heapSize: number;
  objectCount: number;
  objectTypeCounts: Record<string, number>;
  classBytes?: Record<string, [number, number]>;
};
const censusDir = mkdtempSync(join(tmpdir(), "gateway-probe-"));
/** GC and census in every gateway (SIGUSR2), summed. */
const census = async (gateways: ServiceProcess[]): Promise<Census> => {
  const before = new Set(readdirSync(censusDir));
  for (const g of gateways) process.kill(g.pid, "SIGUSR2");
  let files: string[] = [];
  for (let t = 0; t < 600 && files.length < gateways.length; t++) {
    await Bun.sleep(100);
    files = readdirSync(censusDir).filter((f) => !before.has(f));
  }
  await Bun.sleep(200);
  const all = files.map((f) => JSON.parse(readFileSync(join(censusDir, f), "utf8")) as Census);
  const sum: Census = { rss: 0, memory: {}, bmalloc: {}, heapSize: 0, objectCount: 0, objectTypeCounts: {}, classBytes: {} };
  for (const c of all) {
    sum.rss += c.rss;
    sum.heapSize += c.heapSize;
    sum.objectCount += c.objectCount;
    for (const [k, v] of Object.entries(c.memory)) sum.memory[k] = (sum.memory[k] ?? 0) + v;
    for (const [k, v] of Object.entries(c.bmalloc)) sum.bmalloc[k] = (sum.bmalloc[k] ?? 0) + v;
    for (const [k, v] of Object.entries(c.objectTypeCounts)) sum.objectTypeCounts[k] = (sum.objectTypeCounts[k] ?? 0) + v;
    for (const [k, [n, b]] of Object.entries(c.classBytes ?? {})) {
      const e = (sum.classBytes![k] ??= [0, 0]);
      e[0] += n;
      e[1] += b;
    }
  }
  return sum;
};

const stack = await startStack({ services: ["nats"] });
const children: { kill(): void }[] = [];
const gateways: ServiceProcess[] = [];
try {
  const secret = "gateway-probe-secret-0123456789abcdef";
  const env: Record<string, string> = {
    ...stack.env(),
    FLEET_JWT_SECRET: secret,
    LOG_LEVEL: "info",
    FLEET_MAX_CONNECTIONS: "19000",
    GATEWAY_PORT: String(await freePort()),
    GATEWAY_VEHICLE_PORT: String(await freePort()),
    GATEWAY_REUSE_PORT: "true",
    PROBE_CENSUS_DIR: censusDir,
    PROBE_SNAPSHOT: values.snapshot ? "1" : "0",
  };
  const keys = tokenKeys(loadConfig(env));
  for (let i = 0; i < G; i++) {
    gateways.push(
      await startServiceProcess({
        service: "experiments/h2lite/mem/gateway",
        root,
        env,
        logFile: join(censusDir, `gateway-${i + 1}.log`),
      }),
    );
  }
  await Bun.sleep(2000);
  const rss0 = gateways.reduce((s, g) => s + rssOf(g.pid), 0);
  const c0 = await census(gateways);
  const t0 = performance.now();
  const C = Math.ceil(N / 10_000);
  const per = Math.ceil(N / C);
  const ready = await Promise.all(
    Array.from({ length: C }, async (_, i) => {
      const child = Bun.spawn(
        [
          bun,
          join(import.meta.dir, "vehicles.ts"),
          env.GATEWAY_VEHICLE_PORT!,
          String(i * per),
          String(Math.min(per, N - i * per)),
          `127.0.0.${2 + i}`,
          values.every!,
        ],
        { env: { ...process.env, PROBE_KEYS: JSON.stringify(keys) }, stdout: "pipe", stderr: "inherit" },
      );
      children.push(child);
      const reader = child.stdout.getReader();
      let text = "";
      while (!text.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`vehicles ${i} exited: ${text}`);
        text += new TextDecoder().decode(value);
      }
      const [, acked, failed] = text.trim().split(" ").map(Number) as [number, number, number];
      return { acked, failed };
    }),
  );
  const acked = ready.reduce((s, r) => s + r.acked, 0);
  const failed = ready.reduce((s, r) => s + r.failed, 0);
  console.log(
    `${fmt(acked)} vehicles acked (${failed} failed) on ${G} gateway(s) in ${((performance.now() - t0) / 1000).toFixed(1)} s; every ${values.every} s`,
  );
  await Bun.sleep(Number(values.wait) * 1000);
  const rss1 = gateways.reduce((s, g) => s + rssOf(g.pid), 0);
  const c1 = await census(gateways);
  console.log(`gateway RSS: ${fmt(rss0 / 1e6)} MB before, ${fmt(rss1 / 1e6)} MB with them, ${fmt(c1.rss / 1e6)} MB after a GC`);
  console.log(
    `per vehicle: ${fmt((rss1 - rss0) / acked)} B RSS (no forced GC), ${fmt((c1.rss - c0.rss) / acked)} B RSS after GC (both GC'd)`,
  );
  const d = (a: number, b: number) => ((b - a) / acked).toFixed(0);
  console.log(
    `per vehicle after GC: JS heap ${d(c0.heapSize, c1.heapSize)} B, objects ${((c1.objectCount - c0.objectCount) / acked).toFixed(1)}, ` +
      Object.keys(c1.memory)
        .map((k) => `${k} ${d(c0.memory[k]!, c1.memory[k]!)}`)
        .join(", ") +
      `; bmalloc ${Object.keys(c1.bmalloc)
        .filter((k) => k !== "pageFaults")
        .map((k) => `${k} ${d(c0.bmalloc[k]!, c1.bmalloc[k]!)}`)
        .join(", ")}`,
  );
  const types = Object.keys({ ...c0.objectTypeCounts, ...c1.objectTypeCounts })
    .map((k) => [k, ((c1.objectTypeCounts[k] ?? 0) - (c0.objectTypeCounts[k] ?? 0)) / acked] as const)
    .filter(([, v]) => Math.abs(v) >= 0.2)
    .sort((a, b) => b[1] - a[1]);
  console.log(`objects per vehicle by type: ${types.map(([k, v]) => `${k} ${v.toFixed(1)}`).join(", ")}`);
  if (values.snapshot) {
    const bytes = Object.keys(c1.classBytes!)
      .map((k) => {
        const [n0, b0] = c0.classBytes![k] ?? [0, 0];
        const [n1, b1] = c1.classBytes![k]!;
        return [k, (n1 - n0) / acked, (b1 - b0) / acked] as const;
      })
      .filter(([, , b]) => Math.abs(b) >= 8)
      .sort((a, b) => b[2] - a[2]);
    console.log(
      `heap snapshot per vehicle, by class (count, bytes): ${bytes.map(([k, n, b]) => `${k} ${n.toFixed(1)} ${b.toFixed(0)}`).join(", ")}`,
    );
  }
} finally {
  for (const c of children) c.kill();
  await Promise.all(gateways.map((g) => g.stop("SIGKILL", 5000)));
  await stack.stop();
  rmSync(censusDir, { recursive: true, force: true });
}
process.exit(0);
