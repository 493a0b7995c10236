/**
 * What a running `fleet up` started, in `.fleet/status.env`, so that `fleet status` finds the
 * stack's free ports and every service instance without hand-set variables. A shell can read the
 * same file (`set -a; . .fleet/status.env`).
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dir, "..");
export const UP_RECORD = join(root, ".fleet", "status.env");

/** The variables `fleet status` reads, as `fleet up` records them. */
export const UP_VARIABLES = ["NATS_URL", "NATS_MONITOR_URL", "FLEET_ADMIN_URLS", "REDIS_URL", "DATABASE_URL"] as const;
export type UpVariable = (typeof UP_VARIABLES)[number];

export interface UpRecord {
  pid: number;
  values: Partial<Record<UpVariable, string>>;
}

/** Writes the record of this process's `fleet up`. */
export function writeUpRecord(values: Partial<Record<UpVariable, string>>, path = UP_RECORD): void {
  const lines = [`# written by fleet up (pid ${process.pid}); read by fleet status when these variables are not set`];
  lines.push(`FLEET_UP_PID=${process.pid}`);
  for (const name of UP_VARIABLES) if (values[name]) lines.push(`${name}=${values[name]}`);
  writeFileSync(path, `${lines.join("\n")}\n`);
}

/** Removes the record if it is this process's (another `fleet up` may have written it since). */
export function removeUpRecord(path = UP_RECORD): void {
  if (readUpRecord(path, { anyPid: true })?.pid === process.pid) rmSync(path, { force: true });
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it runs, as another user.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
};

/** The record of a `fleet up` that still runs; undefined when there is none (or its process is gone). */
export function readUpRecord(path = UP_RECORD, { anyPid = false } = {}): UpRecord | undefined {
  if (!existsSync(path)) return undefined;
  const values: Partial<Record<UpVariable, string>> = {};
  let pid = 0;
  for (const line of readFileSync(path, "utf8").split("\n")) {
    const eq = line.indexOf("=");
    if (line.startsWith("#") || eq <= 0) continue;
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    if (key === "FLEET_UP_PID") pid = Number(value);
    else if ((UP_VARIABLES as readonly string[]).includes(key)) values[key as UpVariable] = value;
  }
  if (!anyPid && !(pid > 0 && alive(pid))) return undefined;
  return { pid, values };
}
