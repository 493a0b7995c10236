/**
 * What `bun run bench web --profile` says beyond the CPU profile's functions: the page's long
 * tasks (> 50 ms on the renderer's main thread, from a Chrome trace) with what ran in them and how
 * much of their wall time the thread had a core (the trace's thread time), and every Chromium
 * thread's CPU and run-queue wait over the window (/proc). A task that lasts 800 ms with 40 ms of
 * thread time was not busy: it waited for a core.
 */
import { readFileSync, readdirSync } from "node:fs";

interface TraceEvent {
  name: string;
  cat?: string;
  ph: string;
  ts: number;
  dur?: number;
  tdur?: number;
  pid: number;
  tid: number;
  args?: { name?: string; data?: { functionName?: string; url?: string; type?: string } };
}

export interface LongTask {
  /** ms after the trace's first event of the thread. */
  atMs: number;
  wallMs: number;
  /** Thread (CPU) time of the task, ms; NaN when the trace has none. */
  cpuMs: number;
  /** What ran in it: event names by self time, the longest first. */
  inside: { name: string; ms: number }[];
}

export interface TraceSummary {
  /** The page's main thread: top-level tasks' wall and thread time over the traced span. */
  main: { spanMs: number; busyMs: number; cpuMs: number; tasks: number };
  longTasks: LongTask[];
  /** Other threads of the page's renderer and of the GPU process: busy wall ms of their top-level tasks. */
  threads: { name: string; busyMs: number; cpuMs: number }[];
}

/** A label for an event: FunctionCall with its function, EventDispatch with its type. */
function label(e: TraceEvent): string {
  const d = e.args?.data;
  if (e.name === "FunctionCall" && d?.functionName) return `FunctionCall ${d.functionName}`;
  if (e.name === "EventDispatch" && d?.type) return `EventDispatch ${d.type}`;
  return e.name;
}

/** Reads a Chrome trace (playwright's browser.stopTracing()) and summarises it. */
export function summarizeTrace(json: string, longMs = 50): TraceSummary {
  const parsed = JSON.parse(json) as { traceEvents?: TraceEvent[] } | TraceEvent[];
  const events = Array.isArray(parsed) ? parsed : (parsed.traceEvents ?? []);
  const threadNames = new Map<string, string>();
  const processNames = new Map<number, string>();
  for (const e of events) {
    if (e.ph !== "M") continue;
    if (e.name === "thread_name") threadNames.set(`${e.pid}:${e.tid}`, e.args?.name ?? "");
    if (e.name === "process_name") processNames.set(e.pid, e.args?.name ?? "");
  }
  // Complete events per thread, in order.
  const byThread = new Map<string, TraceEvent[]>();
  for (const e of events) {
    if (e.ph !== "X" || e.dur === undefined) continue;
    const key = `${e.pid}:${e.tid}`;
    let list = byThread.get(key);
    if (!list) byThread.set(key, (list = []));
    list.push(e);
  }
  // The page's main thread: the CrRendererMain with the most events (one page is open).
  let mainKey = "";
  for (const [key, list] of byThread)
    if (threadNames.get(key) === "CrRendererMain" && list.length > (byThread.get(mainKey)?.length ?? 0)) mainKey = key;
  const mainPid = Number(mainKey.split(":")[0]);

  /** Top-level events of a thread with their direct children (containment by time). */
  const tree = (list: TraceEvent[]) => {
    list.sort((a, b) => a.ts - b.ts || b.dur! - a.dur!);
    const tops: { e: TraceEvent; all: { e: TraceEvent; childDur: number }[] }[] = [];
    const stack: { e: TraceEvent; childDur: number }[] = [];
    for (const e of list) {
      while (stack.length > 0 && stack.at(-1)!.e.ts + stack.at(-1)!.e.dur! <= e.ts) stack.pop();
      const node = { e, childDur: 0 };
      const parent = stack.at(-1);
      if (parent) {
        parent.childDur += e.dur!;
        tops.at(-1)!.all.push(node);
      } else tops.push({ e, all: [node] });
      stack.push(node);
    }
    return tops;
  };

  const mainList = byThread.get(mainKey) ?? [];
  const tops = tree(mainList);
  const first = tops[0]?.e.ts ?? 0;
  const last = tops.reduce((m, t) => Math.max(m, t.e.ts + t.e.dur!), first);
  const longTasks: LongTask[] = [];
  let busy = 0;
  let cpu = 0;
  for (const t of tops) {
    busy += t.e.dur!;
    cpu += t.e.tdur ?? 0;
    if (t.e.dur! / 1000 <= longMs) continue;
    const self = new Map<string, number>();
    for (const n of t.all) {
      if (n.e === t.e) continue;
      const name = label(n.e);
      self.set(name, (self.get(name) ?? 0) + Math.max(0, n.e.dur! - n.childDur));
    }
    longTasks.push({
      atMs: (t.e.ts - first) / 1000,
      wallMs: t.e.dur! / 1000,
      cpuMs: t.e.tdur === undefined ? Number.NaN : t.e.tdur / 1000,
      inside: [...self]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 6)
        .map(([name, us]) => ({ name, ms: us / 1000 })),
    });
  }
  const threads: TraceSummary["threads"] = [];
  for (const [key, list] of byThread) {
    if (key === mainKey) continue;
    const pid = Number(key.split(":")[0]);
    const proc = processNames.get(pid) ?? "";
    if (pid !== mainPid && !/gpu/i.test(proc)) continue;
    const t = tree(list);
    threads.push({
      name: `${proc || pid} ${threadNames.get(key) ?? key}`,
      busyMs: t.reduce((s, x) => s + x.e.dur!, 0) / 1000,
      cpuMs: t.reduce((s, x) => s + (x.e.tdur ?? 0), 0) / 1000,
    });
  }
  threads.sort((a, b) => b.busyMs - a.busyMs);
  return { main: { spanMs: (last - first) / 1000, busyMs: busy / 1000, cpuMs: cpu / 1000, tasks: tops.length }, longTasks, threads };
}

/** Pids of `root` and all its descendants (a launched Chromium's browser, zygote, renderer and GPU processes). */
function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(name));
      children.set(ppid, list);
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(root);
  return out;
}

/** Per thread of the Chromium processes under `root`, keyed "type thread-name:tid": CPU s and run-queue wait s so far. */
export function chromiumThreadTimes(root = process.pid): Map<string, { cpu: number; wait: number }> {
  const out = new Map<string, { cpu: number; wait: number }>();
  for (const pid of descendants(root)) {
    let type: string;
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
      if (!cmdline.includes("chromium")) continue;
      type = /--type=([\w-]+)/.exec(cmdline)?.[1] ?? "browser";
    } catch {
      continue;
    }
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      try {
        const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim();
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
        const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        const wait = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[1]) / 1e9;
        out.set(`${type} ${comm}:${tid}`, { cpu: (Number(rest[11]) + Number(rest[12])) / 100, wait });
      } catch {
        // the thread ended meanwhile
      }
    }
  }
  return out;
}

/**
 * Resident memory of the Chromium renderer processes under `root` (the page's, and a spare one
 * Chromium may keep), MB: the page's main thread, its workers' heaps and Blink's memory together.
 */
export function rendererRssMb(root = process.pid): number {
  let bytes = 0;
  for (const pid of descendants(root)) {
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("--type=renderer")) continue;
      const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
      if (m) bytes += Number(m[1]) * 1024;
    } catch {
      // gone meanwhile
    }
  }
  return bytes / 1024 / 1024;
}

/** The threads that used the most CPU between two readings: share of a core used and share of the span waiting for one. */
export function busiestThreads(
  before: Map<string, { cpu: number; wait: number }>,
  after: Map<string, { cpu: number; wait: number }>,
  secs: number,
  limit = 10,
): { name: string; cpu: number; wait: number }[] {
  return [...after]
    .map(([name, a]) => {
      const b = before.get(name) ?? { cpu: 0, wait: 0 };
      return { name: name.replace(/:\d+$/, ""), cpu: (a.cpu - b.cpu) / secs, wait: (a.wait - b.wait) / secs };
    })
    .sort((x, y) => y.cpu - x.cpu)
    .slice(0, limit);
}
