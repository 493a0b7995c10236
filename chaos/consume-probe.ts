/**
 * A bare nats.js consume() (the tracker's options: 64 messages, expires 5 s) on an R3 durable of
 * the chaos cluster, under 50 messages/s, while the node holding the consumer's leader is cut off
 * (--partition, needs root: the leader is moved to node 3 first) or SIGSTOPped, `--pause` seconds
 * each cycle. Prints every gap of more than 3 s between messages, nats.js's consume() notifications
 * and what a consumer-info request answers each second: how long the consumer takes to pull again.
 * SUPERVISE=1 closes and restarts consume() at each missed-heartbeats notice (a candidate fix);
 * ALL_STATUS=1 prints heartbeats and pulls too.
 *
 *   bun chaos/consume-probe.ts --partition --cycles 8 --pause 7 --client-node 0
 *   bun chaos/consume-probe.ts --cycles 3 --pause 12 [--client-on-leader]
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { nanos } from "@nats-io/nats-core";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { startChaosNats } from "./nats-cluster";

const { values } = parseArgs({
  options: {
    cycles: { type: "string", default: "3" },
    pause: { type: "string", default: "12" },
    "client-on-leader": { type: "boolean", default: false },
    fetch: { type: "string", default: "64" },
    partition: { type: "boolean", default: false },
    "client-node": { type: "string", default: "" },
  },
});
const t0 = performance.now();
const say = (l: string) => console.log(`${((performance.now() - t0) / 1000).toFixed(1)} s ${l}`);
const dir = mkdtempSync(join(tmpdir(), "consume-probe-"));
const nats = await startChaosNats({ dir, isolate: values.partition });
const admin = await connect({ servers: nats.url, maxReconnectAttempts: -1 });
const jsm = await jetstreamManager(admin);
await jsm.streams.add({ name: "P", subjects: ["p.>"], num_replicas: 3 });
await jsm.consumers.add("P", {
  durable_name: "c",
  ack_policy: AckPolicy.Explicit,
  deliver_policy: DeliverPolicy.All,
  ack_wait: nanos(2000),
  max_ack_pending: 10_000,
});
const leaderOf = async () => {
  const info = await jsm.consumers.info("P", "c");
  return nats.nodes.findIndex((n) => n.name === info.cluster?.leader);
};
const leaderTo = async (i: number) => {
  for (let k = 0; k < 20 && (await leaderOf().catch(() => -1)) !== i; k++) {
    await admin.request("$JS.API.CONSUMER.LEADER.STEPDOWN.P.c", "", { timeout: 5000 }).catch(() => {});
    await Bun.sleep(1500);
  }
  return leaderOf();
};
if (values.partition) say(`consumer leader moved to node ${(await leaderTo(2)) + 1}`);
const leader0 = await leaderOf();
const clientNode = values["client-node"] !== "" ? Number(values["client-node"]) : values["client-on-leader"] ? leader0 : (leader0 + 1) % 3;
say(`consumer leader node ${leader0 + 1}; client on node ${clientNode + 1}`);
const nc = await connect({ servers: nats.nodes[clientNode]!.url, maxReconnectAttempts: -1, pingInterval: 2000 });
const js = jetstream(nc);
const consumer = await js.consumers.get("P", "c");
let got = 0;
let lastAt = performance.now();
let maxGap = 0;
let restarts = 0;
const run = async (): Promise<void> => {
  const messages = await consumer.consume({ max_messages: Number(values.fetch), expires: 5_000 });
  void (async () => {
    for await (const s of messages.status()) {
      if (!process.env.ALL_STATUS && (s.type === "heartbeat" || s.type === "next")) continue;
      say(`status ${JSON.stringify(s)} got ${got}`);
      if (process.env.SUPERVISE && s.type === "heartbeats_missed") {
        restarts++;
        say(`restarting consume() (${restarts})`);
        void messages.close();
        void run();
        return;
      }
    }
  })();
  for await (const m of messages) {
    got++;
    const now = performance.now();
    if (now - lastAt > 3000) say(`message after a ${Math.round(now - lastAt)} ms gap`);
    maxGap = Math.max(maxGap, now - lastAt);
    lastAt = now;
    m.ack();
  }
};
void run();

// What a consumer-info request answers meanwhile, asked every second from the client's node (as nats.js's reset asks).
const probeNc = await connect({ servers: nats.nodes[clientNode]!.url, maxReconnectAttempts: -1 });
const probeJsm = await jetstreamManager(probeNc, { timeout: 2000 });
let lastInfo = "";
const infoTimer = setInterval(() => {
  const at = performance.now();
  probeJsm.consumers
    .info("P", "c")
    .then(
      (i) => `leader ${i.cluster?.leader}`,
      (e) => `error ${String(e?.message ?? e)}`,
    )
    .then((r) => {
      if (r !== lastInfo) say(`info now: ${r} (${Math.round(performance.now() - at)} ms)`);
      lastInfo = r;
    });
}, 1000);
let sent = 0;
const pub = setInterval(() => {
  js.publish(`p.${sent % 8}`, new Uint8Array(100)).then(
    () => sent++,
    () => {},
  );
}, 20);

try {
  for (let c = 1; c <= Number(values.cycles); c++) {
    await Bun.sleep(2000);
    if (values.partition && c > 1) say(`consumer leader moved to node ${(await leaderTo(2)) + 1}`);
    const leader = await leaderOf();
    if (values.partition) {
      maxGap = 0;
      say(`cycle ${c}: cut node 3 (consumer leader node ${leader + 1}); got ${got} of ${sent}`);
      nats.partition();
      await Bun.sleep(Number(values.pause) * 1000);
      nats.heal();
      say(`cycle ${c}: healed; got ${got}; longest gap so far ${Math.round(maxGap)} ms`);
      maxGap = 0;
      await Bun.sleep(30_000);
      maxGap = Math.max(maxGap, performance.now() - lastAt);
      say(
        `cycle ${c}: 30 s after the heal got ${got} of ${sent}; longest gap ${Math.round(maxGap)} ms; leader now node ${(await leaderOf().catch(() => -2)) + 1}`,
      );
      continue;
    }
    const victim = values["client-on-leader"] ? clientNode : leader;
    const pid = nats.nodes[victim]!.pid()!;
    maxGap = 0;
    say(`cycle ${c}: SIGSTOP node ${victim + 1} (consumer leader node ${leader + 1}); got ${got} of ${sent}`);
    process.kill(pid, "SIGSTOP");
    await Bun.sleep(Number(values.pause) * 1000);
    process.kill(pid, "SIGCONT");
    say(`cycle ${c}: SIGCONT; got ${got}; longest gap so far ${Math.round(maxGap)} ms`);
    maxGap = 0;
    await Bun.sleep(15_000);
    maxGap = Math.max(maxGap, performance.now() - lastAt);
    say(
      `cycle ${c}: 15 s after SIGCONT got ${got} of ${sent}; longest gap ${Math.round(maxGap)} ms; leader now node ${(await leaderOf().catch(() => -2)) + 1}`,
    );
    maxGap = 0;
  }
} finally {
  clearInterval(pub);
  clearInterval(infoTimer);
  await probeNc.close();
  await nc.close();
  await admin.close();
  await nats.stop();
}
