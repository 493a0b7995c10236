/**
 * The gateway as gateway/main.ts runs it, plus the memory probe's debug signals (only here, never in
 * the service): SIGUSR2 collects garbage (Bun.gc(true), twice) and writes a census to
 * `$PROBE_CENSUS_DIR/<pid>-<n>.json`: RSS, process.memoryUsage(), bmalloc's figures, heapStats()'s
 * object counts by type, and (with PROBE_SNAPSHOT=1) bytes by class from a heap snapshot.
 * Started by ../gateway-probe.ts through dev's startServiceProcess (service "experiments/h2lite/mem/gateway").
 */
import { heapStats, memoryUsage } from "bun:jsc";
import { createGateway } from "../../../../gateway/gateway";
import { runService } from "../../../../lib/run-service";

let n = 0;
process.on("SIGUSR2", () => {
  Bun.gc(true);
  Bun.gc(true);
  const stats = heapStats();
  const census: Record<string, unknown> = {
    rss: process.memoryUsage().rss,
    memory: process.memoryUsage(),
    bmalloc: memoryUsage(),
    heapSize: stats.heapSize,
    objectCount: stats.objectCount,
    objectTypeCounts: stats.objectTypeCounts,
  };
  if (process.env.PROBE_SNAPSHOT === "1") {
    const s = Bun.generateHeapSnapshot() as unknown as { nodes: number[]; nodeClassNames: string[] };
    const bytes: Record<string, [number, number]> = {};
    for (let i = 0; i < s.nodes.length; i += 4) {
      const e = (bytes[s.nodeClassNames[s.nodes[i + 2]!]!] ??= [0, 0]);
      e[0]++;
      e[1] += s.nodes[i + 1]!;
    }
    census.classBytes = bytes;
    if (process.env.PROBE_SNAPSHOT_FILE) Bun.write(`${process.env.PROBE_SNAPSHOT_FILE}.${process.pid}-${n + 1}.json`, JSON.stringify(s));
  }
  Bun.write(`${process.env.PROBE_CENSUS_DIR}/${process.pid}-${++n}.json`, JSON.stringify(census));
});

await runService({
  name: "gateway",
  start: createGateway,
  stop: (gateway) => gateway.drain(),
  stopName: "drain",
});
