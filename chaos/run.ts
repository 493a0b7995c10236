/**
 * `bun run chaos`: every fault of chaos/faults.ts in sequence on one cluster (three nats-servers,
 * two gateways, two trackers, two history writers, Redis, PostgreSQL), each under a steady load
 * from the vehicle client library and each checked by chaos/checker.ts. The last line says how many
 * faults were injected and how many acked points were lost; the exit code is 1 when any check failed.
 */
import { parseArgs } from "node:util";
import { check } from "./checker";
import { startChaosCluster, type ChaosCluster } from "./cluster";
import { FAULTS, settled, type Fault } from "./faults";
import { startLoad } from "./load";

const help = `usage: bun run chaos [--minutes N] [--only WORD] [--vehicles N]

Starts a cluster on this machine (3 nats-servers, node 3 in its own network namespace when run as
root; 2 gateways, 2 trackers, 2 history writers; Redis and PostgreSQL) and runs each fault under a
steady load from the vehicle client library: SIGKILL of the stream leader then a follower, SIGSTOP
of a node past the election timeout, a network partition, SIGKILL of a gateway, of a history writer
mid-transaction and of a tracker under open watches, and a rolling restart of the NATS cluster.
After each, the checker asks: every acked point in PostgreSQL exactly once, the tracker at each
vehicle's newest acked point, history's count equal to the acked count.

  --minutes N    load time spread over the faults (default 3; recovery waits come on top)
  --only WORD    run only the faults whose name contains WORD (e.g. partition, leader, rolling)
  --vehicles N   vehicles of the load, each a point every 100 ms (default 20)

The last line: "chaos: F faults injected, A acked points, L lost" (L must be 0).`;

export interface ChaosReport {
  injected: number;
  acked: number;
  lost: number;
  failed: string[];
  skipped: string[];
}

/** Runs `faults` on `cluster`, each with `seconds` of load; logs as it goes. */
export async function runFaults(
  cluster: ChaosCluster,
  faults: readonly Fault[],
  { seconds, vehicles = 20, log = console.log }: { seconds: number; vehicles?: number; log?: (line: string) => void },
): Promise<ChaosReport> {
  const report: ChaosReport = { injected: 0, acked: 0, lost: 0, failed: [], skipped: [] };
  for (const [n, fault] of faults.entries()) {
    const why = fault.skip?.(cluster) ?? "";
    if (why) {
      log(`${fault.name}: skipped: ${why}`);
      report.skipped.push(fault.name);
      continue;
    }
    log(`${fault.name}`);
    const t0 = performance.now();
    await settled(cluster);
    const load = await startLoad({
      urls: cluster.gateways.map((g) => g.proc.url),
      prefix: `chaos${n}-${Date.now().toString(36)}-`,
      vehicles,
    });
    let outcome: Awaited<ReturnType<Fault["run"]>> = { injected: 0 };
    const problems: string[] = [];
    try {
      outcome = await fault.run({ cluster, load, seconds, log });
    } catch (err) {
      problems.push(`the fault did not complete: ${(err as Error).message}`);
    }
    const tallies = [...(await load.stop()), ...(outcome.extra ?? [])];
    const result = await check(cluster, tallies);
    problems.push(...result.problems, ...(outcome.problems ?? []));
    report.injected += outcome.injected;
    report.acked += result.acked;
    report.lost += result.lost;
    for (const note of outcome.notes ?? []) log(`  ${note}`);
    log(
      `  ${problems.length === 0 ? "ok" : "FAILED"}: ${result.acked} acked, ${result.stored} in PostgreSQL, ${result.lost} lost, ${result.duplicates} twice, history counts ${result.historyCount}, tracker behind on ${result.trackerBehind.length}; sinks caught up ${(result.waitedMs / 1000).toFixed(1)} s after the load stopped (${Math.round((performance.now() - t0) / 1000)} s)`,
    );
    for (const p of problems) log(`  - ${p}`);
    if (problems.length > 0) report.failed.push(fault.name);
  }
  return report;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Bun.argv.slice(2),
    options: { minutes: { type: "string" }, only: { type: "string" }, vehicles: { type: "string" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    console.log(help);
    process.exit(0);
  }
  const minutes = Number(values.minutes ?? 3);
  const vehicles = Number(values.vehicles ?? 20);
  if (!(minutes > 0) || !Number.isInteger(vehicles) || vehicles < 1) {
    console.error("--minutes takes a number above 0 and --vehicles a whole number from 1; see --help");
    process.exit(2);
  }
  const faults = FAULTS.filter((f) => !values.only || f.name.includes(values.only));
  if (faults.length === 0) {
    console.error(`no fault's name contains "${values.only}"; the faults:\n${FAULTS.map((f) => `  ${f.name}`).join("\n")}`);
    process.exit(2);
  }
  console.log("chaos: starting 3 nats-servers, Redis, PostgreSQL, 2 gateways, 2 trackers, 2 history writers");
  const cluster = await startChaosCluster();
  let report: ChaosReport;
  try {
    report = await runFaults(cluster, faults, { seconds: (minutes * 60) / faults.length, vehicles });
  } finally {
    await cluster.stop();
  }
  if (report.skipped.length > 0) console.log(`chaos: skipped ${report.skipped.join("; ")}`);
  if (report.failed.length > 0) console.log(`chaos: FAILED ${report.failed.join("; ")}`);
  console.log(`chaos: ${report.injected} faults injected, ${report.acked} acked points, ${report.lost} lost`);
  process.exit(report.failed.length > 0 || report.lost > 0 ? 1 : 0);
}
