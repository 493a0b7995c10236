/**
 * Short versions of the chaos run (chaos/, `bun run chaos` for all faults with minutes of load): a
 * network partition under seconds of load, judged by the one checker, and the checker itself
 * failing on a point that was acked and never stored. Its own 3-node NATS cluster (node 3 in a
 * network namespace) and service processes; Redis and PostgreSQL from the shared stack.
 */
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "bun:test";
import { check } from "../chaos/checker";
import { startChaosCluster, type ChaosCluster } from "../chaos/cluster";
import { FAULTS } from "../chaos/faults";
import { startLoad } from "../chaos/load";
import { netnsUnavailable } from "../chaos/nats-cluster";
import { testStack } from "../dev";

const why = netnsUnavailable();
let cluster: ChaosCluster;

beforeAll(async () => {
  const stack = await testStack(["redis", "postgres"]);
  // Sinks on the majority side, so that the check's wait is about consumer leaders moving, not a
  // sink's own connection being cut; `bun run chaos` lets them sit on any node.
  cluster = await startChaosCluster({ stack, gateways: 1, trackers: 1, history: 1, sinkNats: "majority" });
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
}, 30_000);

test("chaos - the checker counts an acked point missing from PostgreSQL as lost and names the tracker behind", async () => {
  const r = await check(cluster, [{ vehicleId: "chaos-never-sent", durableSeq: 3, pushed: 3, rejected: 0, dropped: 0, failovers: 0 }], 300);
  expect(r).toMatchObject({ acked: 3, stored: 0, lost: 3, historyCount: 0 });
  expect(r.problems).toContain("3 acked points are not in PostgreSQL");
  expect(r.trackerBehind).toEqual(["chaos-never-sent: tracker 0, acked 3"]);
});

if (why) {
  test.skip(`chaos - network partition (skipped: ${why})`, () => {});
  console.warn(`chaos - network partition: skipped: ${why}`);
} else {
  test("chaos - network partition: the minority side's publish is UNAVAILABLE and acks nothing, the majority goes on; healed, every acked point stored once", async () => {
    const fault = FAULTS.find((f) => f.name.startsWith("network partition"))!;
    const t0 = performance.now();
    const lines: string[] = [];
    const log = (l: string) => lines.push(`${Math.round(performance.now() - t0)} ms ${l}`);
    const load = await startLoad({
      urls: cluster.gateways.map((g) => g.proc.url),
      prefix: `chaos-t-${Date.now().toString(36)}-`,
      vehicles: 5,
    });
    const outcome = await fault.run({ cluster, load, seconds: 1, log });
    const tallies = [...(await load.stop(20_000)), ...(outcome.extra ?? [])];
    log("load stopped");
    // A sink whose consumer leader sat on the cut-off node receives nothing until nats.js pulls
    // again: chaos/consume-probe.ts measured 4-20 s after the heal (14 cycles, median 8 s; nats.js
    // asks for the consumer every 5 s, each ask waiting up to its 5 s timeout, and once a pull was
    // answered by heartbeats alone for ~18 s): likely why the tracker once ran past a 15 s check
    // here. 40 s: past those and past the consumers' ack_wait (30 s), after which anything delivered
    // into the cut is delivered again. The sinks log each stall ("jetstream consumer stalled").
    const result = await check(cluster, tallies, 40_000);
    log(`checked: sinks caught up in ${result.waitedMs} ms`);
    console.error(lines.join("\n"));
    if (result.problems.length > 0) {
      // The cluster's folder (and its logs) goes with the run: show the sinks' last lines here.
      for (const svc of [...cluster.trackers, ...cluster.history]) {
        const text = await Bun.file(join(cluster.dir, `${svc.id}.log`))
          .text()
          .catch(() => "");
        console.error(`--- ${svc.id}.log, last 60 lines:\n${text.split("\n").slice(-60).join("\n")}`);
      }
    }
    expect(outcome.problems).toEqual([]);
    expect(outcome.notes![0]).toMatch(
      /^minority publish answered Unavailable: "positions store unavailable, retry with backoff"; 0 pushed after the cut acked there while cut off/,
    );
    expect(result.problems).toEqual([]);
    expect(result.lost).toBe(0);
    // Both sides: the majority's vehicles and, after the heal, the minority's.
    expect(outcome.extra!.every((t) => t.durableSeq > 0)).toBe(true);
    expect(result.acked).toBeGreaterThan(50);
  }, 90_000);
}
