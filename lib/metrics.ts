/**
 * Prometheus metrics. Each service owns one registry (so several services in one process,
 * as in tests and `fleet up`, do not collide) and serves it on `/metrics`.
 */
import { Registry, collectDefaultMetrics } from "prom-client";

export { Counter, Gauge, Histogram, Registry } from "prom-client";

/** Creates a registry with process metrics and a `service` label on every series. */
export function createRegistry(service: string, { processMetrics = true } = {}): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  if (processMetrics) collectDefaultMetrics({ register: registry });
  return registry;
}

/** Latency buckets in seconds, from 0.25 ms to 5 s. */
export const latencyBuckets = [
  0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
];
