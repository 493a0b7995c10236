/** What the stack's server files share: the server record, the host a starter is given, errors and helpers. */
import type { ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

export type ServiceName = "nats" | "redis" | "postgres" | "s3";

/** Thrown when a server cannot be found, installed or started; the message includes the log tail. */
export class StackError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StackError";
  }
}

export interface Server {
  name: ServiceName;
  /** Name of its log file and data folder: the service's name, or "nats-2", "nats-3" for further NATS cluster nodes. */
  id: string;
  port: number;
  /** Second port (NATS monitoring). */
  port2?: number;
  /** NATS cluster: this node's route port, and every node's (routes to the others). */
  cluster?: { port: number; ports: number[]; node: number };
  child?: ChildProcess;
  exited?: Promise<void>;
  initialized: boolean;
}

export interface Binaries {
  nats?: string;
  redis?: string;
  postgresBin?: string;
}

/** What startStack gives a server's starter: its folder, binaries, and how to spawn and wait. */
export interface ServerHost {
  readonly dir: string;
  readonly binaries: Binaries;
  readonly s3Bucket: string;
  /** Spawns the server in its own process group, its output in its log file. */
  spawnServer(s: Server, argv: string[], cwd?: string): void;
  /** Resolves once `check` passes; a StackError with the log tail if the server exits or the time runs out. */
  waitReady(s: Server, check: () => Promise<void>): Promise<void>;
  /** Log file of a server, by its id. */
  logFile(id: string): string;
}

export function which(name: string, extra: string[] = []): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(":").filter(Boolean), ...extra];
  for (const d of dirs) {
    const p = join(d, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

export function tail(file: string, lines = 30): string {
  try {
    return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export /** Environment of a server: ours without the variables that would steer it elsewhere (PGDATA, …). */
function serverEnv(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !k.startsWith("PG")) out[k] = v;
  }
  return out;
}
