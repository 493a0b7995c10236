/**
 * Mosquitto for the MQTT ceiling: the system's broker, started by the bench on a free loopback
 * port with a minimal config in a temporary folder (never the machine's own broker on 1883),
 * and the QoS 1 measurement over 1..N connections spread on up to two load processes.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../dev";
import type { MqttWorkerOptions, MqttWorkerResult } from "./mqtt-worker";

export const MOSQUITTO_BIN = "/usr/sbin/mosquitto";

export interface Mosquitto {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/** Starts /usr/sbin/mosquitto on a free loopback port; throws when it is not installed. */
export async function startMosquitto(): Promise<Mosquitto> {
  if (!existsSync(MOSQUITTO_BIN)) {
    throw new Error(`${MOSQUITTO_BIN} not found: install it with "apt-get install -y mosquitto" (root)`);
  }
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "bench-mosquitto-"));
  const conf = join(dir, "mosquitto.conf");
  const lines = [`listener ${port} 127.0.0.1`, "allow_anonymous true", "persistence false", "log_dest stderr", "log_type error"];
  // Started as root, mosquitto switches to the "mosquitto" user, which may not exist here.
  if (process.getuid?.() === 0) lines.push("user root");
  writeFileSync(conf, `${lines.join("\n")}\n`);
  const child: ChildProcess = spawn(MOSQUITTO_BIN, ["-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const deadline = Date.now() + 5000;
  while (!(await canConnect(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`mosquitto did not start: ${stderr.trim()}`);
    }
    await Bun.sleep(50);
  }
  return {
    url: `mqtt://127.0.0.1:${port}`,
    pid: child.pid!,
    async stop() {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
      await exited;
      clearTimeout(timer);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ port, host: "127.0.0.1" });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

export interface MqttRunOptions {
  url: string;
  connections: number;
  /** Unacked publishes per connection. */
  window: number;
  vehicles: number;
  warmupMs: number;
  durationMs: number;
  /** Load processes at most (connections are split between them). */
  processes: number;
}

/** Runs the QoS 1 load with `connections` connections; returns PUBACKs per second. */
export async function measureMqtt(o: MqttRunOptions): Promise<{ pointsPerSecond: number; failed: number }> {
  const procs = Math.max(1, Math.min(o.processes, o.connections));
  const runs: Promise<MqttWorkerResult>[] = [];
  for (let p = 0; p < procs; p++) {
    const connections = Math.floor(o.connections / procs) + (p < o.connections % procs ? 1 : 0);
    const share = Math.floor(o.vehicles / procs);
    const options: MqttWorkerOptions = {
      url: o.url,
      connections,
      window: o.window,
      vehicles: share,
      first: p * share,
      warmupMs: o.warmupMs,
      durationMs: o.durationMs,
    };
    runs.push(runWorker(options));
  }
  const results = await Promise.all(runs);
  return {
    pointsPerSecond: results.reduce((s, r) => s + r.acked / r.seconds, 0),
    failed: results.reduce((s, r) => s + r.failed, 0),
  };
}

async function runWorker(options: MqttWorkerOptions): Promise<MqttWorkerResult> {
  const proc = Bun.spawn([process.execPath, join(import.meta.dir, "mqtt-worker.ts"), JSON.stringify(options)], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  const line = out.trim().split("\n").pop() ?? "";
  if (code !== 0 || !line.startsWith("{")) throw new Error(`mqtt worker failed (${code}): ${err.trim().slice(-500)}`);
  return JSON.parse(line) as MqttWorkerResult;
}
