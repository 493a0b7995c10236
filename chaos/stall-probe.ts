/**
 * Partition/heal cycles of the chaos cluster aimed at the tracker's consumer (one gateway, one
 * tracker, one history writer, each on the node asked for): each cycle moves the consumer leaders
 * to the node to be cut off if asked, runs a load, cuts node 3 off for `--cut` seconds, heals, and
 * asks the checker (60 s) how long the sinks took to hold every acked point. The cluster's logs are
 * copied to `--out`. Needs root (ip netns).
 *
 *   bun chaos/stall-probe.ts --cycles 5 --cut 8 --tracker-node 2 --leader-minority
 */
import { cpSync, mkdirSync } from "node:fs";
import { parseArgs } from "node:util";
import { connect } from "@nats-io/transport-node";
import { startStack } from "../dev";
import { CONSUMERS, POSITIONS_STREAM } from "../lib/nats";
import { check } from "./checker";
import { startChaosCluster } from "./cluster";
import { settled } from "./faults";
import { startLoad } from "./load";

const { values } = parseArgs({
  options: {
    cycles: { type: "string", default: "3" },
    cut: { type: "string", default: "8" },
    "tracker-node": { type: "string", default: "" },
    "history-node": { type: "string", default: "" },
    "leader-minority": { type: "boolean", default: false },
    "leader-history-minority": { type: "boolean", default: false },
    vehicles: { type: "string", default: "10" },
    out: { type: "string", default: `/tmp/stall/probe-${Date.now().toString(36)}` },
  },
});
const t0 = performance.now();
const say = (l: string) => console.log(`${((performance.now() - t0) / 1000).toFixed(1)} s ${l}`);
mkdirSync(values.out!, { recursive: true });

const stack = await startStack({ services: ["redis", "postgres"] });
const cluster = await startChaosCluster({ stack, gateways: 1, trackers: 0, history: 0 });
const nodeUrl = (v: string) => (v === "" ? cluster.majorityUrl : cluster.nats.nodes[Number(v)]!.url);
const tracker = await cluster.startService("tracker", { NATS_URL: nodeUrl(values["tracker-node"]!) });
cluster.trackers.push(tracker);
const history = await cluster.startService("history", { NATS_URL: nodeUrl(values["history-node"]!) });
cluster.history.push(history);
const nc = await connect({ servers: cluster.nats.nodes.slice(0, 2).map((n) => n.url) });

const consumerLeader = async (durable: string) => {
  const info = await (await cluster.jsm()).consumers.info(POSITIONS_STREAM, durable);
  return info.cluster?.leader ?? "";
};
const leaderTo = async (durable: string, name: string) => {
  for (let i = 0; i < 20 && (await consumerLeader(durable).catch(() => "")) !== name; i++) {
    await nc.request(`$JS.API.CONSUMER.LEADER.STEPDOWN.${POSITIONS_STREAM}.${durable}`, "", { timeout: 5000 }).catch(() => {});
    await Bun.sleep(1500);
  }
  return consumerLeader(durable).catch(() => "?");
};

let failures = 0;
try {
  for (let c = 1; c <= Number(values.cycles); c++) {
    await settled(cluster);
    if (values["leader-minority"]) say(`tracker consumer leader: ${await leaderTo(CONSUMERS.tracker, "fleet-c3")}`);
    if (values["leader-history-minority"]) say(`history consumer leader: ${await leaderTo(CONSUMERS.history, "fleet-c3")}`);
    const load = await startLoad({
      urls: [cluster.gateways[0]!.proc.url],
      prefix: `probe-${c}-${Date.now().toString(36)}-`,
      vehicles: Number(values.vehicles),
    });
    await Bun.sleep(1500);
    cluster.nats.partition();
    say(`cycle ${c}: cut`);
    await Bun.sleep(Number(values.cut) * 1000);
    cluster.nats.heal();
    say(`cycle ${c}: healed`);
    await settled(cluster).catch((err) => say(String(err)));
    await Bun.sleep(2000);
    const tallies = await load.stop(20_000);
    const r = await check(cluster, tallies, 60_000);
    say(
      `cycle ${c}: acked ${r.acked}, waited ${r.waitedMs} ms, problems: ${r.problems.join("; ") || "none"}; leaders now tracker ${await consumerLeader(CONSUMERS.tracker).catch(() => "?")}`,
    );
    if (r.problems.length > 0) failures++;
  }
} finally {
  cpSync(cluster.dir, values.out!, { recursive: true });
  say(`logs in ${values.out}; ${failures} failed cycles`);
  await nc.close();
  await cluster.stop();
  await stack.stop();
}
