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
 * Per thread of `pid`: CPU seconds used and seconds spent runnable but waiting for a core, so far
 * (/proc/<pid>/task/<tid>/stat and schedstat; empty when unavailable). Time a service's busy
 * thread waits here is time its event loop is late without doing anything: the machine's other
 * work had the cores.
 */
export function threadTimes(pid: number): Map<string, { cpu: number; wait: number }> {
  const out = new Map<string, { cpu: number; wait: number }>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const wait = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[1]) / 1e9;
      out.set(tid, { cpu: (Number(rest[11]) + Number(rest[12])) / 100, wait });
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/**
 * The share of the time between two `threadTimes` readings that the busiest thread (the one that
 * used the most CPU: a Bun process's JavaScript thread, nats-server's busiest goroutine thread)
 * spent waiting for a core.
 */
function busiestThreadWait(
  before: Map<string, { cpu: number; wait: number }>,
  after: Map<string, { cpu: number; wait: number }>,
  secs: number,
): number {
  let best = -1;
  let wait = NaN;
  for (const [tid, a] of after) {
    const b = before.get(tid) ?? { cpu: 0, wait: 0 };
    if (a.cpu - b.cpu > best) {
      best = a.cpu - b.cpu;
      wait = (a.wait - b.wait) / secs;
    }
  }
  return wait;
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
  const th0 = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, p ? threadTimes(p) : new Map()]));
  const waited: Record<string, number> = {};
  return {
    /** After `stop`: the share of the phase each pid's busiest thread waited for a core (see threadTimes). */
    waited,
    stop(): Record<string, number> {
      const secs = (performance.now() - t0) / 1000;
      for (const [k, p] of Object.entries(pids)) waited[k] = p ? busiestThreadWait(th0[k]!, threadTimes(p), secs) : NaN;
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
