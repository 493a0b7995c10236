/**
 * Prometheus metrics. Each service owns one registry (so several services in one process,
 * as in tests and `fleet up`, do not collide) and serves it on `/metrics`.
 */
import { Counter, Gauge, Registry } from "prom-client";

export { Counter, Gauge, Histogram, Registry } from "prom-client";

/**
 * A few cheap process metrics (resident memory, heap, CPU, open streams are per service).
 * prom-client's `collectDefaultMetrics` was measured at ~150 ms of CPU per scrape in a loaded
 * gateway (its per-heap-space statistics), which a 15 s scrape interval cannot afford on the hot path.
 */
function registerProcessMetrics(registry: Registry): void {
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
  return registry;
}

/** Latency buckets in seconds, from 0.25 ms to 5 s. */
export const latencyBuckets = [
  0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
];
