/**
 * Runs a service (`bun <service>/main.ts`) as a child process and waits for its "listening" log
 * line. Used by `fleet up`, end-to-end tests and benchmarks, which need a real process boundary
 * (SIGKILL, SIGTERM drain, resident memory).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream } from "node:fs";
import { join } from "node:path";

export interface ServiceProcessOptions {
  /** Folder name of the service: "gateway", "tracker", "history", "archiver". */
  service: string;
  /** Environment of the child (merged over process.env). */
  env?: Record<string, string | undefined>;
  /** File that receives the child's log lines; none: discarded. */
  logFile?: string;
  /** How long to wait for the "listening" line. */
  readyTimeoutMs?: number;
  /** Repository root; default the folder above lib/. */
  root?: string;
}

export interface ServiceProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** URL from the "listening" line, e.g. http://127.0.0.1:50051. */
  readonly url: string;
  /** URL from the "admin listening" line: /metrics and /healthz. */
  readonly adminUrl: string;
  /** Resolves with the exit code (or signal name) when the process ends. */
  readonly exited: Promise<number | string>;
  /** Sends a signal and waits for the exit; SIGKILL after `timeoutMs` if it has not ended. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | string>;
}

/** Path of the bun binary that runs this process (also when started through npm). */
export function bunPath(): string {
  return process.execPath;
}

/** Starts `bun <service>/main.ts` and resolves once it logged {"msg":"listening","url":…}. */
export async function startServiceProcess({
  service,
  env = {},
  logFile,
  readyTimeoutMs = 20_000,
  root = join(import.meta.dir, ".."),
}: ServiceProcessOptions): Promise<ServiceProcess> {
  const child = spawn(bunPath(), [join(root, service, "main.ts")], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const log = logFile ? createWriteStream(logFile, { flags: "a" }) : undefined;
  const exited = new Promise<number | string>((resolve) => child.once("exit", (code, signal) => resolve(code ?? signal ?? "unknown")));
  const tail: string[] = [];
  let adminUrl = "";
  const url = await new Promise<string>((resolve, reject) => {
    let buffered = "";
    let done = false;
    const timer = setTimeout(() => finish(new Error(`${service} did not start within ${readyTimeoutMs} ms`)), readyTimeoutMs);
    const finish = (err: Error | null, value?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        child.kill("SIGKILL");
        const portTaken = tail.some((line) => line.includes("EADDRINUSE"))
          ? ` (its port is taken by another process: stop that one, or set ${service.toUpperCase()}_PORT to a free port, 0 for any)`
          : "";
        reject(new Error(`${err.message}${portTaken}; last log lines:\n${tail.join("\n")}`));
      } else resolve(value!);
    };
    const onData = (chunk: Buffer) => {
      log?.write(chunk);
      buffered += chunk.toString("utf8");
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        tail.push(line);
        if (tail.length > 20) tail.shift();
        if (!done && (line.includes('"listening"') || line.includes('"admin listening"'))) {
          try {
            const parsed = JSON.parse(line) as { msg?: string; url?: string };
            if (parsed.msg === "admin listening" && parsed.url) adminUrl = parsed.url;
            if (parsed.msg === "listening" && parsed.url) finish(null, parsed.url);
          } catch {
            // not JSON: keep waiting
          }
        }
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    exited.then((code) => finish(new Error(`${service} exited (${code}) before it was ready`)));
  });
  return {
    child,
    pid: child.pid!,
    url,
    adminUrl,
    exited,
    async stop(signal = "SIGTERM", timeoutMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      log?.end();
      return code;
    },
  };
}
