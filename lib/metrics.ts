/**
 * Prometheus metrics. Each service owns one registry (so several services in one process,
 * as in tests and `fleet up`, do not collide) and serves it on `/metrics`.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { version as packageVersion } from "../package.json";

export { Counter, Gauge, Histogram, Registry } from "prom-client";

/** How often the event loop's delay is sampled (ms). */
const LOOP_SAMPLE_MS = 10;
/** The histograms of every registry of this process that samples the event loop (one timer for all). */
const loopDelayHistograms = new Set<Histogram>();
let loopTimerStarted = false;

/**
 * Samples how late a timer fires, every LOOP_SAMPLE_MS: how long the event loop was busy (work or
 * garbage collection) when something else was due. A point, an ack or a watch event waiting in this
 * process waits about as long; at ~100 wake-ups a second it costs nothing measurable.
 */
function sampleEventLoop(): void {
  if (loopTimerStarted) return;
  loopTimerStarted = true;
  let due = performance.now() + LOOP_SAMPLE_MS;
  const tick = () => {
    const now = performance.now();
    const late = Math.max(0, now - due) / 1000;
    for (const h of loopDelayHistograms) h.observe(late);
    due = now + LOOP_SAMPLE_MS;
    setTimeout(tick, LOOP_SAMPLE_MS).unref();
  };
  setTimeout(tick, LOOP_SAMPLE_MS).unref();
}

/**
 * A few cheap process metrics (resident memory, heap, CPU, event-loop delay; open streams are per service).
 * prom-client's `collectDefaultMetrics` was measured at ~150 ms of CPU per scrape in a loaded
 * gateway (its per-heap-space statistics), which a 15 s scrape interval cannot afford on the hot path.
 */
function registerProcessMetrics(registry: Registry): void {
  loopDelayHistograms.add(
    new Histogram({
      name: "process_event_loop_delay_seconds",
      help: `how late a timer due every ${LOOP_SAMPLE_MS} ms fired: the time the event loop was busy (work or garbage collection) when something else was due`,
      buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
  );
  sampleEventLoop();
  const startSeconds = Math.floor(Date.now() / 1000 - process.uptime());
  new Gauge({
    name: "process_resident_memory_bytes",
    help: "Resident memory size in bytes.",
    registers: [registry],
    collect() {
      this.set(process.memoryUsage.rss());
    },
  });
  new Gauge({
    name: "process_heap_used_bytes",
    help: "JavaScript heap in use, in bytes.",
    registers: [registry],
    collect() {
      this.set(process.memoryUsage().heapUsed);
    },
  });
  new Gauge({
    name: "process_start_time_seconds",
    help: "Start time of the process since the Unix epoch, in seconds.",
    registers: [registry],
    collect() {
      this.set(startSeconds);
    },
  });
  let last = process.cpuUsage();
  new Counter({
    name: "process_cpu_seconds_total",
    help: "User and system CPU time spent, in seconds.",
    registers: [registry],
    collect() {
      const now = process.cpuUsage();
      this.inc((now.user - last.user + now.system - last.system) / 1e6);
      last = now;
    },
  });
}

/** Creates a registry with process metrics and a `service` label on every series. */
export function createRegistry(service: string, { processMetrics = true } = {}): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  if (processMetrics) registerProcessMetrics(registry);
  // Which release each instance runs: `fleet status` and a dashboard read it, and a rolling upgrade shows two.
  new Gauge({
    name: "fleet_build_info",
    help: "1, labelled with the version of the release this process runs",
    labelNames: ["version"],
    registers: [registry],
  })
    .labels(packageVersion)
    .set(1);
  return registry;
}

/** Latency buckets in seconds, from 0.25 ms to 5 s; finer around the milliseconds that unary calls aim at (Nearby ≤ 2 ms). */
export const latencyBuckets = [0.00025, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/**
 * Buckets in seconds, fine between 1 and 50 ms, where the promises of tens of milliseconds (a live
 * map, an ack) are kept or broken: for how far a pipeline runs behind (a point's age when a stage
 * has it) and for the steps on that path.
 */
export const delayBuckets = [
  0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];
