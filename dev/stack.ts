/**
 * The stack helper: starts, on free loopback ports and in one folder, the servers the platform needs
 * and the environment does not give (NATS_URL, REDIS_URL, DATABASE_URL, S3_ENDPOINT): nats-server with
 * JetStream, redis-server, PostgreSQL (a fresh initdb) and s3rver, from the system's binaries.
 * Tests, `fleet up`, the demo and the benchmarks all use it.
 *
 * Cleanup does not depend on the parent's goodwill: a detached watchdog shell polls the parent and,
 * once it is gone (even after SIGKILL), stops every server this stack started and removes the
 * temporary folder. PR_SET_PDEATHSIG was the other candidate; it was not chosen because it fires when
 * the spawning *thread* exits, is cleared when the child changes uid (postgres under root), only
 * reaches the direct child and cannot remove the folder.
 *
 * When the watchdog itself is killed with the parent (`bun test` kills what a timed-out test
 * spawned, the watchdog among it), the next stack started on the machine finds the orphans: a
 * temporary stack folder whose parent is gone, with servers still running from it.
 */
import { spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { loadConfig } from "../lib/config";
import { silentLogger, type Logger } from "../lib/log";
import { freePort } from "./free-port";
import { natsNodeName, startNats } from "./nats";
import { findPostgresBin, startPostgres } from "./postgres";
import { startRedis } from "./redis";
import { startS3 } from "./s3";
import { serverEnv, sleep, StackError, tail, which, type Binaries, type Server, type ServerHost, type ServiceName } from "./server";

export { StackError, type ServiceName } from "./server";
export { timescalePreloadOptions } from "./postgres";

/** Every service, in the order they are reported. */
export const ALL_SERVICES: readonly ServiceName[] = ["nats", "redis", "postgres", "s3"];

export interface StackOptions {
  /** Services wanted (default all). One given by the environment is used, not started. */
  services?: ServiceName[];
  /** Folder for data and logs; created when missing and kept on stop(). Default: a new temporary folder, removed on stop(). */
  dir?: string;
  /** Where NATS_URL, REDIS_URL, DATABASE_URL and S3_* are read from (default process.env). */
  env?: Record<string, string | undefined>;
  /** Progress lines ("started nats"); the servers' own logs go to files in `dir`. */
  log?: Logger;
  /** How long each server may take to become ready (default 30 s). */
  readyTimeoutMs?: number;
  /**
   * nats-server processes (default 1). Several form one JetStream cluster on loopback, each with its
   * own ports and store; NATS_URL is then the comma list of them all.
   */
  natsNodes?: number;
}

/** One nats-server of the stack, so that a test can kill, pause or restart that node alone. */
export interface NatsNode {
  /** 0-based. */
  readonly index: number;
  /** Its server_name (a cluster's stream info names leader and replicas by it); "" for a single server. */
  readonly name: string;
  /** nats://127.0.0.1:PORT of this node. */
  readonly url: string;
  /** http://127.0.0.1:PORT of its monitoring endpoint. */
  readonly monitorUrl: string;
  readonly logFile: string;
  /** Its process id while it runs. */
  pid(): number | undefined;
  /** Stops this node: "SIGTERM" clean, "SIGKILL" a crash. */
  stop(signal?: "SIGTERM" | "SIGKILL"): Promise<void>;
  /** Starts it again on its ports with its store, and waits until its /healthz passes (caught up). */
  start(): Promise<void>;
}

export interface S3Settings {
  endpoint: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
}

export interface Stack {
  /** nats://127.0.0.1:PORT (comma-separated, one per node, for a cluster), or NATS_URL when given; "" when neither. */
  readonly natsUrl: string;
  /** nats-server processes this stack runs (0 when NATS is given by the environment). */
  readonly natsNodes: number;
  /** Node `index` (0-based) of the nats-servers this stack started; throws for another. */
  natsNode(index: number): NatsNode;
  /** http://127.0.0.1:PORT of the started nats-server's monitoring endpoint; "" when not started here. */
  readonly natsMonitorUrl: string;
  /** redis://127.0.0.1:PORT, or REDIS_URL when given; "" when neither. */
  readonly redisUrl: string;
  /** postgres://postgres@127.0.0.1:PORT/fleet, or DATABASE_URL when given; "" when neither. */
  readonly databaseUrl: string;
  /** S3 settings (endpoint "" when neither started nor given). */
  readonly s3: S3Settings;
  /** Folder of this stack: data and logs (`logs/<service>.log`). */
  readonly dir: string;
  /** NATS_URL, REDIS_URL, DATABASE_URL, S3_* (those known) for child processes. */
  env(): Record<string, string>;
  /** True when the service is available, started here or given by the environment. */
  has(name: ServiceName): boolean;
  /** Process id of a server this stack runs now (NATS: its first node), or undefined. */
  pid(name: ServiceName): number | undefined;
  /** Log file of a server this stack started (NATS: its first node's). */
  logFile(name: ServiceName): string;
  /**
   * Stops a server (every NATS node) this stack started and waits for its exit. "SIGTERM" is a clean stop (PostgreSQL
   * gets SIGINT, its fast shutdown, so that open client connections do not hold it); "SIGKILL" kills
   * the server's whole process group, like a crash. Throws for a server given by the environment.
   */
  stopService(name: ServiceName, signal?: "SIGTERM" | "SIGKILL"): Promise<void>;
  /**
   * Starts a server again on the same port with the same data (JetStream store, PostgreSQL data
   * folder, Redis dump written at clean shutdown, S3 folder), and waits until it is ready. A service
   * this stack never ran is started fresh. No-op when it is running or given by the environment.
   */
  startService(name: ServiceName): Promise<void>;
  /** Stops all servers it started (SIGTERM, SIGKILL after a timeout) and removes a temporary folder. */
  stop(): Promise<void>;
}

const ROOT = resolve(import.meta.dir, "..");
const STOP_TIMEOUT_MS = 10_000;

function findBinary(name: ServiceName): string | undefined {
  switch (name) {
    case "nats":
      return which("nats-server", ["/usr/sbin", "/usr/local/bin"]);
    case "redis":
      return which("redis-server", ["/usr/bin", "/usr/local/bin"]);
    case "postgres":
      return findPostgresBin();
    case "s3":
      return process.execPath; // s3rver runs on this very bun
  }
}

/** Finds the binaries, running scripts/ensure-system.sh (apt-get as root) for missing ones. */
function ensureBinaries(names: ServiceName[], log: Logger): Binaries {
  const missing = names.filter((n) => n !== "s3" && !findBinary(n));
  if (missing.length > 0) {
    log.info("stack: installing missing servers", { missing });
    // Its stdout and stderr go to our stderr: a person should see "installing nats-server with apt-get".
    const r = spawnSync("bash", [join(ROOT, "scripts", "ensure-system.sh"), ...missing], { stdio: ["ignore", 2, 2] });
    if (r.status !== 0) {
      throw new StackError(
        `missing ${missing.join(", ")} and could not install ${missing.length > 1 ? "them" : "it"} (see the ensure-system lines above); ` +
          `install the Debian packages or set ${missing.map((m) => ENV_VAR[m]).join(" / ")}`,
      );
    }
  }
  return { nats: findBinary("nats"), redis: findBinary("redis"), postgresBin: findBinary("postgres") };
}

const ENV_VAR: Record<ServiceName, string> = { nats: "NATS_URL", redis: "REDIS_URL", postgres: "DATABASE_URL", s3: "S3_ENDPOINT" };

/** Shell run detached: waits for the parent to disappear, then stops the servers and removes the folder. */
const WATCHDOG = `
parent=$1; dir=$2; remove=$3; pids="$dir/.stack-pids"
if [ -d /proc/$$ ]; then
  alive() { read -r st 2>/dev/null < "/proc/$1/stat" || return 1; case "$st" in *") Z "*|*") X "*) return 1;; esac; return 0; }
else
  alive() { kill -0 "$1" 2>/dev/null; }
fi
while alive "$parent"; do sleep 0.2; done
if [ -f "$pids" ]; then
  while read -r pid sig; do kill -s "$sig" "$pid" 2>/dev/null; done < "$pids"
  n=0
  while [ $n -lt 50 ]; do
    any=0
    while read -r pid sig; do if alive "$pid"; then any=1; fi; done < "$pids"
    [ $any = 0 ] && break
    sleep 0.1; n=$((n+1))
  done
  while read -r pid sig; do kill -s KILL -- "-$pid" 2>/dev/null; done < "$pids"
fi
if [ "$remove" = 1 ]; then rm -rf "$dir"; fi
`;

const pidAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
};

/** Whether process `pid` runs from inside `dir`: a path in it on its command line, or its working folder (redis-server rewrites its title). */
function runsFrom(pid: number, dir: string): boolean {
  const inside = `${dir}/`;
  try {
    if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(inside)) return true;
  } catch {
    return false;
  }
  try {
    return `${readlinkSync(`/proc/${pid}/cwd`)}/`.startsWith(inside);
  } catch {
    return false;
  }
}

/**
 * Stops the servers of temporary stack folders whose parent process is gone and removes the
 * folders: what a watchdog killed along with its parent left behind. Only processes that still run
 * from such a folder are signalled (a pid reused since is left alone). Returns the folders removed.
 */
export function reapOrphanedStacks(root = tmpdir(), log: Logger = silentLogger): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(root).filter((n) => n.startsWith("fleet-stack-"));
  } catch {
    return removed;
  }
  for (const name of names) {
    const dir = join(root, name);
    let parent: number;
    let pids: number[];
    try {
      parent = Number(readFileSync(join(dir, ".stack-parent"), "utf8").trim());
      pids = readFileSync(join(dir, ".stack-pids"), "utf8")
        .split("\n")
        .filter(Boolean)
        .map((l) => Number(l.split(" ")[0]));
    } catch {
      continue; // a folder of another version, or one being set up
    }
    if (!(parent > 0) || pidAlive(parent)) continue;
    const orphans = pids.filter((pid) => pid > 0 && pidAlive(pid) && runsFrom(pid, dir));
    for (const pid of orphans) {
      try {
        process.kill(-pid, "SIGKILL"); // its process group: PostgreSQL's backends too
      } catch {
        try {
          process.kill(pid, "SIGKILL");
        } catch {}
      }
    }
    if (orphans.length > 0)
      log.warn(`stopped ${orphans.length} server(s) left running by a stack whose process and watchdog were killed`, {
        dir,
        pids: orphans,
      });
    rmSync(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  return removed;
}

/** Stacks alive in this process, for the synchronous exit hook. */
const live = new Set<{ signalAll(): void }>();
let exitHookInstalled = false;
function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Exit handlers cannot wait: send the stop signals now; the watchdog sees us gone, waits for the
  // servers, SIGKILLs stragglers and removes the folder.
  process.on("exit", () => {
    for (const s of live) s.signalAll();
  });
}

/** Starts what the environment does not give, in parallel, and resolves once every server answers. */
export async function startStack({
  services = [...ALL_SERVICES],
  dir: givenDir,
  env = process.env,
  log = silentLogger,
  readyTimeoutMs = 30_000,
  natsNodes = 1,
}: StackOptions = {}): Promise<Stack> {
  if (!Number.isInteger(natsNodes) || natsNodes < 1) throw new StackError(`natsNodes must be a whole number ≥ 1, got ${natsNodes}`);
  const config = loadConfig(env);
  const given: Partial<Record<ServiceName, boolean>> = {
    nats: config.natsUrl !== "",
    redis: config.redisUrl !== "",
    postgres: config.databaseUrl !== "",
    s3: config.s3Endpoint !== "",
  };
  const temporary = givenDir === undefined;
  if (temporary) reapOrphanedStacks(tmpdir(), log);
  const dir = givenDir ? resolve(givenDir) : mkdtempSync(join(tmpdir(), "fleet-stack-"));
  mkdirSync(join(dir, "logs"), { recursive: true });
  if (temporary) writeFileSync(join(dir, ".stack-parent"), `${process.pid}\n`);
  // PostgreSQL runs as another user under root and must reach its data folder inside ours.
  chmodSync(dir, 0o711);

  // By id: "nats" (a cluster's first node), "nats-2", "nats-3", "redis", …
  const servers = new Map<string, Server>();
  let binaries: Binaries = {};
  let stopped = false;

  const logFile = (id: string) => join(dir, "logs", `${id}.log`);
  const natsIds = Array.from({ length: natsNodes }, (_, i) => (i === 0 ? "nats" : `nats-${i + 1}`));
  const natsList = () => natsIds.map((id) => servers.get(id)).filter((s): s is Server => s !== undefined);
  const s3Bucket = config.s3Bucket;

  const writePids = () => {
    const lines: string[] = [];
    for (const s of servers.values()) {
      if (s.child?.pid && s.child.exitCode === null && s.child.signalCode === null) {
        lines.push(`${s.child.pid} ${s.name === "postgres" ? "INT" : "TERM"}`);
      }
    }
    const tmp = join(dir, ".stack-pids.tmp");
    writeFileSync(tmp, lines.join("\n") + (lines.length ? "\n" : ""));
    renameSync(tmp, join(dir, ".stack-pids"));
  };

  writePids();
  const watchdog = spawn("sh", ["-c", WATCHDOG, "fleet-stack-watchdog", String(process.pid), dir, temporary ? "1" : "0"], {
    detached: true,
    stdio: "ignore",
  });
  watchdog.unref();

  const running = (s: Server) => s.child !== undefined && s.child.exitCode === null && s.child.signalCode === null;

  const spawnServer = (s: Server, argv: string[], cwd = dir) => {
    const fd = openSync(logFile(s.id), "a");
    try {
      // Own process group (detached): a Ctrl-C meant for the parent does not hit the servers, and
      // SIGKILL can reach PostgreSQL's backends through the group.
      const child = spawn(argv[0]!, argv.slice(1), { cwd, detached: true, stdio: ["ignore", fd, fd], env: serverEnv() });
      child.unref();
      s.child = child;
      s.exited = new Promise((r) => {
        child.once("exit", () => r());
        child.once("error", () => r());
      });
      s.exited.then(() => {
        if (!stopped) writePids();
      });
    } finally {
      closeSync(fd);
    }
    writePids();
  };

  const waitReady = async (s: Server, check: () => Promise<void>) => {
    const deadline = Date.now() + readyTimeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      if (!running(s)) {
        await sleep(50); // let the log flush
        throw new StackError(`${s.id} exited before it was ready; last lines of ${logFile(s.id)}:\n${tail(logFile(s.id))}`);
      }
      try {
        await check();
        return;
      } catch (err) {
        last = err;
      }
      await sleep(50);
    }
    throw new StackError(
      `${s.id} was not ready within ${readyTimeoutMs} ms (${last instanceof Error ? last.message : String(last)}); ` +
        `last lines of ${logFile(s.id)}:\n${tail(logFile(s.id))}`,
      { cause: last },
    );
  };

  const host: ServerHost = {
    dir,
    get binaries() {
      return binaries;
    },
    s3Bucket,
    spawnServer,
    waitReady,
    logFile,
  };
  const starters: Record<ServiceName, (s: Server, host: ServerHost) => Promise<void>> = {
    nats: startNats,
    redis: startRedis,
    postgres: startPostgres,
    s3: startS3,
  };

  // Ports handed out by this stack: freePort may return one again once its socket is closed.
  const handedOut = new Set<number>();
  const newPort = async () => {
    for (;;) {
      const p = await freePort();
      if (!handedOut.has(p)) {
        handedOut.add(p);
        return p;
      }
    }
  };
  /** The server records of a service, created (ports picked) once, on first use. */
  const records = new Map<ServiceName, Promise<Server[]>>();
  const recordsOf = (name: ServiceName): Promise<Server[]> => {
    let r = records.get(name);
    if (!r) {
      r = createRecords(name);
      records.set(name, r);
    }
    return r;
  };
  const createRecords = async (name: ServiceName): Promise<Server[]> => {
    if (name !== "nats") {
      let s = servers.get(name);
      if (!s) {
        s = { name, id: name, port: await newPort(), initialized: false };
        servers.set(name, s);
      }
      return [s];
    }
    if (natsList().length === 0) {
      // Every node's route port is known before any starts: each lists the others.
      const ports: number[] = [];
      for (let i = 0; i < natsNodes; i++) ports.push(await newPort());
      for (const [i, id] of natsIds.entries()) {
        servers.set(id, {
          name,
          id,
          port: await newPort(),
          port2: await newPort(),
          cluster: natsNodes > 1 ? { port: ports[i]!, ports, node: i } : undefined,
          initialized: false,
        });
      }
    }
    return natsList();
  };

  const starting = new Map<string, Promise<void>>();
  const startService = async (name: ServiceName): Promise<void> => {
    if (stopped) throw new StackError("stack was stopped");
    if (given[name]) return; // the environment's server: nothing to start
    const wanted = await recordsOf(name);
    if (name !== "s3" && !(name === "postgres" ? binaries.postgresBin : binaries[name])) binaries = ensureBinaries([name], log);
    // A cluster's nodes start together: none is ready (healthz) before the others elect a meta leader.
    await Promise.all(wanted.map((s) => startServer(s)));
  };
  const startServer = async (s: Server): Promise<void> => {
    if (stopped) throw new StackError("stack was stopped");
    const pending = starting.get(s.id);
    if (pending) return pending;
    const name = s.name;
    const p = (async () => {
      if (running(s)) return;
      const t0 = performance.now();
      for (let attempt = 1; ; attempt++) {
        try {
          await starters[name](s, host);
          break;
        } catch (err) {
          // freePort() closes its socket before the server binds, so another process may take the
          // port in between; on a first start, take new ports. A restart must keep its port.
          const taken = err instanceof StackError && /address already in use|EADDRINUSE|port \d+ in use/i.test(err.message);
          if (s.initialized || !taken || attempt >= 3) throw err;
          // (A cluster's route port stays: the other nodes already route to it.)
          log.warn(`stack: ${s.id} port was taken, trying another`, { service: name, port: s.port });
          s.port = await newPort();
          if (s.port2 !== undefined) s.port2 = await newPort();
        }
      }
      s.initialized = true;
      log.info(`stack: ${s.id} ready`, { service: name, port: s.port, pid: s.child?.pid, ms: Math.round(performance.now() - t0) });
    })();
    starting.set(s.id, p);
    try {
      await p;
    } finally {
      starting.delete(s.id);
    }
  };

  const stopServer = async (s: Server, signal: "SIGTERM" | "SIGKILL", timeoutMs = STOP_TIMEOUT_MS) => {
    if (!s.child || !running(s)) return;
    const pid = s.child.pid!;
    try {
      if (signal === "SIGKILL") process.kill(-pid, "SIGKILL");
      else process.kill(pid, s.name === "postgres" ? "SIGINT" : "SIGTERM");
    } catch {
      // already gone
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        // already gone
      }
    }, timeoutMs);
    await s.exited;
    clearTimeout(timer);
    // PostgreSQL backends outlive a killed postmaster for a moment and would block the restart.
    if (signal === "SIGKILL") await waitGroupGone(pid, 5000);
  };

  const handle = {
    signalAll() {
      for (const s of servers.values()) {
        if (s.child?.pid && running(s)) {
          try {
            process.kill(s.child.pid, s.name === "postgres" ? "SIGINT" : "SIGTERM");
          } catch {
            // already gone
          }
        }
      }
    },
  };
  live.add(handle);
  installExitHook();

  const stack: Stack = {
    get natsUrl() {
      return given.nats
        ? config.natsUrl
        : natsList()
            .map((s) => `nats://127.0.0.1:${s.port}`)
            .join(",");
    },
    get natsNodes() {
      return given.nats ? 0 : natsList().length;
    },
    natsNode(index) {
      const s = given.nats ? undefined : natsList()[index];
      if (!s) throw new StackError(`nats node ${index} was not started by this stack (it runs ${stack.natsNodes})`);
      return {
        index,
        name: s.cluster ? natsNodeName(index) : "",
        url: `nats://127.0.0.1:${s.port}`,
        monitorUrl: `http://127.0.0.1:${s.port2}`,
        logFile: logFile(s.id),
        pid: () => (running(s) ? s.child!.pid : undefined),
        async stop(signal = "SIGTERM") {
          await starting.get(s.id)?.catch(() => {});
          await stopServer(s, signal);
          writePids();
        },
        start: () => startServer(s),
      };
    },
    get natsMonitorUrl() {
      return !given.nats && servers.has("nats") ? `http://127.0.0.1:${servers.get("nats")!.port2}` : "";
    },
    get redisUrl() {
      return given.redis ? config.redisUrl : servers.has("redis") ? `redis://127.0.0.1:${servers.get("redis")!.port}` : "";
    },
    get databaseUrl() {
      return given.postgres
        ? config.databaseUrl
        : servers.has("postgres")
          ? `postgres://postgres@127.0.0.1:${servers.get("postgres")!.port}/fleet`
          : "";
    },
    get s3() {
      const endpoint = given.s3 ? config.s3Endpoint : servers.has("s3") ? `http://127.0.0.1:${servers.get("s3")!.port}` : "";
      // s3rver accepts its fixed S3RVER/S3RVER keys, the config's defaults.
      return {
        endpoint,
        bucket: s3Bucket,
        accessKeyId: config.s3AccessKeyId,
        secretAccessKey: config.s3SecretAccessKey,
        region: config.s3Region,
      };
    },
    dir,
    env() {
      const out: Record<string, string> = {};
      if (stack.natsUrl) out.NATS_URL = stack.natsUrl;
      if (stack.redisUrl) out.REDIS_URL = stack.redisUrl;
      if (stack.databaseUrl) out.DATABASE_URL = stack.databaseUrl;
      const s3 = stack.s3;
      if (s3.endpoint) {
        out.S3_ENDPOINT = s3.endpoint;
        out.S3_BUCKET = s3.bucket;
        out.S3_ACCESS_KEY_ID = s3.accessKeyId;
        out.S3_SECRET_ACCESS_KEY = s3.secretAccessKey;
        out.S3_REGION = s3.region;
      }
      return out;
    },
    has(name) {
      return Boolean(given[name]) || servers.has(name);
    },
    pid(name) {
      const s = servers.get(name);
      return s && running(s) ? s.child!.pid : undefined;
    },
    logFile,
    async stopService(name, signal = "SIGTERM") {
      if (given[name]) throw new StackError(`${name} comes from ${ENV_VAR[name]}; this stack cannot stop it`);
      const started = name === "nats" ? natsList() : [servers.get(name)].filter((s): s is Server => s !== undefined);
      if (started.length === 0) throw new StackError(`${name} was never started by this stack`);
      await Promise.all(
        started.map(async (s) => {
          await starting.get(s.id)?.catch(() => {});
          await stopServer(s, signal);
        }),
      );
      writePids();
    },
    startService,
    async stop() {
      if (stopped) return;
      stopped = true;
      await Promise.all([...starting.values()].map((p) => p.catch(() => {})));
      await Promise.all([...servers.values()].map((s) => stopServer(s, "SIGTERM")));
      live.delete(handle);
      try {
        process.kill(-watchdog.pid!, "SIGKILL");
      } catch {
        // already gone
      }
      if (temporary) rmSync(dir, { recursive: true, force: true });
      else writePids();
      log.info("stack: stopped", { dir });
    },
  };

  try {
    const wanted = [...new Set(services)].filter((n) => !given[n]);
    binaries = ensureBinaries(wanted, log);
    await Promise.all(wanted.map((n) => startService(n)));
  } catch (err) {
    await stack.stop().catch(() => {});
    throw err;
  }
  return stack;
}

async function waitGroupGone(pgid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      process.kill(-pgid, 0);
    } catch {
      return;
    }
    await sleep(20);
  }
}
