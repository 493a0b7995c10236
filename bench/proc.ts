/** Linux /proc readings for the bench: resident memory and CPU time of a process. */
import { readFileSync, readdirSync } from "node:fs";

/** VmRSS of `pid` in bytes (0 when the process is gone). */
export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** User + system CPU seconds `pid` has used so far (0 when the process is gone). */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the ")" that closes the command name: state is field 3, utime 14, stime 15.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(rest[11]) + Number(rest[12])) / 100;
  } catch {
    return 0;
  }
}

/**
 * Seconds the main thread of `pid` has spent runnable but waiting for a core, so far
 * (/proc/<pid>/task/<pid>/schedstat, second field; NaN when unavailable). Time a service waits
 * here is time its event loop is late without doing anything: the machine's other work had the cores.
 */
export function runQueueWaitSeconds(pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, "utf8").split(" ")[1]) / 1e9;
  } catch {
    return NaN;
  }
}

/** Pids of the direct children of `parent` whose command name is `comm`. */
export function childPids(parent: number, comm: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const c = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === parent && c === comm) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** CPU seconds the whole machine spent busy (all cores, /proc/stat), or NaN off Linux. */
export function machineBusySeconds(): number {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!;
    const f = line.trim().split(/\s+/).slice(1, 9).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    return (total - f[3]! - f[4]!) / 100;
  } catch {
    return NaN;
  }
}

/**
 * Measures the CPU share (1.0 = one core) each pid used between creation and `stop()`. With
 * `rest`, also what every other process on the machine used: when that is high, something else
 * competed for the cores and the figures of the phase are low.
 */
export function cpuMeter(pids: Record<string, number | undefined>, { rest = false } = {}) {
  const t0 = performance.now();
  const m0 = machineBusySeconds();
  const c0 = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, p ? cpuSeconds(p) : 0]));
  const w0 = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, p ? runQueueWaitSeconds(p) : NaN]));
  const waited: Record<string, number> = {};
  return {
    /** After `stop`: the share of the phase each pid's main thread waited for a core (see runQueueWaitSeconds). */
    waited,
    stop(): Record<string, number> {
      const secs = (performance.now() - t0) / 1000;
      for (const [k, p] of Object.entries(pids)) waited[k] = p ? (runQueueWaitSeconds(p) - w0[k]!) / secs : NaN;
      const out: Record<string, number> = Object.fromEntries(
        Object.entries(pids).map(([k, p]) => [k, p ? (cpuSeconds(p) - c0[k]!) / secs : NaN]),
      );
      if (rest) {
        const ours = Object.values(out).reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);
        out["rest of machine"] = Math.max(0, (machineBusySeconds() - m0) / secs - ours);
      }
      return out;
    },
  };
}
