/**
 * A 3-node NATS JetStream cluster started by the stack helper: the positions stream at R3, a
 * gateway whose publishes go on after the stream leader is SIGKILLed, a node paused past the
 * election timeout that catches up. Its own stack (three nats-servers), not the shared one.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { AckPolicy, type JetStreamManager } from "@nats-io/jetstream";
import { startStack, type Stack } from "../dev";
import { createGateway, type Gateway } from "../gateway/gateway";
import { grpcClient, point, SECRET, storedPoints, uniqueName, uploadPoints } from "../gateway/test/helpers";
import { mintVehicleToken, tokenKeys } from "../lib/auth";
import { loadConfig } from "../lib/config";
import { createLogger, type Logger } from "../lib/log";
import { createRegistry } from "../lib/metrics";
import { connectNats, ensurePositionsStream, type Nats } from "../lib/nats";
import { natsServers } from "../lib/nats/jetstream";

let stack: Stack;
let nats: Nats;
const quiet = createLogger({ level: "error" });

/** A logger that keeps its messages, to assert on what an operator reads. */
/** A process's state letter from /proc (T: stopped), or "gone". */
function processState(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")[0]!;
  } catch {
    return "gone";
  }
}

function recordingLogger(msgs: string[]): Logger {
  return createLogger({ level: "debug", write: (line) => msgs.push(JSON.parse(line).msg) });
}

/**
 * Every member names the same meta leader and JetStream answers: the next test must not start
 * while a restarted node rejoins (its API answers "temporarily unavailable" meanwhile).
 */
async function clusterSettled(): Promise<void> {
  await eventually(async () => {
    const leaders = await Promise.all(
      [0, 1, 2].map(async (i) => (await fetch(`${stack.natsNode(i).monitorUrl}/jsz`).then((r) => r.json())).meta_cluster?.leader),
    );
    if (!leaders[0] || leaders.some((l) => l !== leaders[0])) throw new Error(`meta leaders: ${leaders.join(", ")}`);
    await nats.jsm.getAccountInfo();
  }, 30_000);
}

async function streamInfo(jsm: JetStreamManager, stream: string) {
  return jsm.streams.info(stream);
}

/** Waits until `check` passes (it throws until then). */
async function eventually<T>(check: () => Promise<T>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await Bun.sleep(100);
    }
  }
}

beforeAll(async () => {
  stack = await startStack({ services: ["nats"], natsNodes: 3 });
  nats = await connectNats({ url: stack.natsUrl, name: "cluster test", log: quiet });
}, 60_000);

afterAll(async () => {
  for (let i = 0; i < 3; i++) {
    const pid = stack?.natsNode(i).pid();
    if (pid) process.kill(pid, "SIGCONT"); // a failed pause test must not leave a node stopped
  }
  await nats?.close();
  await stack?.stop();
});

test("cluster - the stack runs three nats-servers and NATS_URL lists them all", () => {
  expect(stack.natsNodes).toBe(3);
  const urls = natsServers(stack.natsUrl);
  expect(urls).toHaveLength(3);
  expect(new Set(urls).size).toBe(3);
  expect(stack.env().NATS_URL).toBe(stack.natsUrl);
  for (let i = 0; i < 3; i++) {
    expect(stack.natsNode(i).url).toBe(urls[i]!);
    expect(stack.natsNode(i).pid()).toBeGreaterThan(0);
  }
});

test("cluster - FLEET_STREAM_REPLICAS 3 scales a live R1 stream and its durable consumer, and says so", async () => {
  const stream = uniqueName("CL");
  const base = { stream, subjects: `${stream}.>`, duplicateWindow: 60_000, streamMaxAge: 3_600_000, streamMaxBytes: 64 * 1024 ** 2 };
  await ensurePositionsStream(nats.jsm, { ...base, replicas: 1 });
  // Created as the services create theirs: no replicas of its own.
  await nats.jsm.consumers.add(stream, { durable_name: "sink", ack_policy: AckPolicy.Explicit });
  const lines: string[] = [];
  const info = await ensurePositionsStream(nats.jsm, { ...base, replicas: 3, log: recordingLogger(lines) });
  expect(info.config.num_replicas).toBe(3);
  expect(lines).toContain("positions stream replicas 1 -> 3");
  const settled = await eventually(async () => {
    const s = await streamInfo(nats.jsm, stream);
    if (!s.cluster?.leader || s.cluster.replicas?.length !== 2 || !s.cluster.replicas.every((r) => r.current)) throw new Error("not yet");
    return s;
  });
  expect([stack.natsNode(0).name, stack.natsNode(1).name, stack.natsNode(2).name]).toContain(settled.cluster!.leader!);
  const consumer = await eventually(async () => {
    const c = await nats.jsm.consumers.info(stream, "sink");
    if (c.cluster?.replicas?.length !== 2) throw new Error(`consumer replicas ${c.cluster?.replicas?.length ?? 0}`);
    return c;
  });
  expect(consumer.cluster!.leader).toBeTruthy();
  // Unchanged replicas: no update, no line.
  const again: string[] = [];
  await ensurePositionsStream(nats.jsm, { ...base, replicas: 3, log: recordingLogger(again) });
  expect(again).toEqual([]);
}, 30_000);

test("cluster - SIGKILL of the stream leader: a gateway's uploads go on after the election and nothing acked is lost", async () => {
  const config = loadConfig({
    FLEET_JWT_SECRET: SECRET,
    GATEWAY_PORT: "0",
    NATS_URL: stack.natsUrl,
    LOG_LEVEL: "error",
    GATEWAY_MAX_FIX_RATE: "0",
    FLEET_STREAM_MAX_BYTES: String(64 * 1024 * 1024),
    FLEET_STREAM_REPLICAS: "3",
  });
  const stream = uniqueName("CLGW");
  const registry = createRegistry("gateway");
  const gateway: Gateway = await createGateway({
    config,
    stream,
    subjectPrefix: `${stream}.pos.`,
    log: quiet,
    registry,
    publishTimeoutMs: 1000,
    publishAttempts: 2,
  });
  const client = grpcClient(gateway.url.replace(/^https?:\/\//, ""), { own: true });
  try {
    const info = await eventually(async () => {
      const s = await streamInfo(nats.jsm, stream);
      if (s.config.num_replicas !== 3 || !s.cluster?.leader || !s.cluster.replicas?.every((r) => r.current)) throw new Error("not R3 yet");
      return s;
    });
    const leader = [0, 1, 2].find((i) => stack.natsNode(i).name === info.cluster!.leader)!;
    // A client given the leader's node alone: it must learn the other members from the cluster to
    // have anywhere to reconnect to, and count the reconnect.
    const watcherLog: string[] = [];
    const watcherRegistry = createRegistry("cluster-test", { processMetrics: false });
    const watcher = await connectNats({
      url: stack.natsNode(leader).url,
      name: "cluster test watcher",
      log: recordingLogger(watcherLog),
      registry: watcherRegistry,
    });
    const vehicle = uniqueName("v");
    const token = await mintVehicleToken(tokenKeys(config), vehicle, { fleetId: "fleet-a" });
    const acked: number[] = [];
    let seq = 0;
    let refused = 0;
    // The vehicle's loop: a batch of 5, resent as it was until acked (the client library's retry).
    const send = async () => {
      const batch = [1, 2, 3, 4, 5].map((k) => seq + k);
      for (;;) {
        const r = await uploadPoints(
          client,
          token,
          batch.map((s) => point(vehicle, s)),
        );
        if (r.response?.ack) {
          acked.push(...batch);
          seq += batch.length;
          return;
        }
        refused++;
        expect(r.error?.code).toBe(14); // UNAVAILABLE while the stream has no leader: nothing acked
        await Bun.sleep(100);
      }
    };
    for (let i = 0; i < 10; i++) await send();
    const killedAt = performance.now();
    await stack.natsNode(leader).stop("SIGKILL");
    for (let i = 0; i < 10; i++) await send();
    const recoveredMs = performance.now() - killedAt;
    expect(recoveredMs).toBeLessThan(15_000);
    const metric = async (name: string) =>
      Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(await watcherRegistry.metrics())?.[1]);
    await eventually(async () => {
      if ((await metric("nats_connected")) !== 1) throw new Error("watcher not reconnected");
    });
    expect(await metric("nats_reconnects_total")).toBe(1);
    expect(watcherLog).toContain("nats disconnected");
    expect(watcherLog).toContain("nats reconnecting");
    expect(watcherLog).toContain("nats reconnected");
    await watcher.close();
    // Read through a node that lived: the test's own connection may have been on the dead one.
    // Retried: right after the election JetStream's API can still time out a request (jetstreamManager's
    // own account request included), seen 1 run in 3 under CI load.
    const after = await eventually(async () => {
      const survivor = await connectNats({ url: stack.natsNode((leader + 1) % 3).url, name: "cluster test reader", log: quiet });
      return await streamInfo(survivor.jsm, stream).finally(() => survivor.close());
    });
    expect(after.cluster!.leader).not.toBe(stack.natsNode(leader).name);
    const stored = (await eventually(() => storedPoints(stack.natsNode((leader + 1) % 3).url, stream)))
      .filter((p) => p.vehicleId === vehicle)
      .map((p) => p.seq);
    expect(stored.sort((a, b) => a - b)).toEqual(acked); // every acked point once, none twice
    expect(acked).toHaveLength(100);
    console.error(`cluster: leader SIGKILLed, uploads acked again after ${Math.round(recoveredMs)} ms (${refused} refused meanwhile)`);
  } finally {
    client.close();
    for (let i = 0; i < 3; i++) await stack.natsNode(i).start();
    await gateway.close();
    await clusterSettled();
  }
}, 60_000);

test("cluster - a node paused past the election timeout catches up after SIGCONT", async () => {
  const stream = uniqueName("CLP");
  await ensurePositionsStream(nats.jsm, {
    stream,
    subjects: `${stream}.>`,
    duplicateWindow: 60_000,
    streamMaxAge: 3_600_000,
    streamMaxBytes: 64 * 1024 ** 2,
    replicas: 3,
  });
  const info = await eventually(async () => {
    const s = await streamInfo(nats.jsm, stream);
    if (!s.cluster?.leader || !s.cluster.replicas?.every((r) => r.current)) throw new Error("not settled");
    return s;
  });
  // A follower: pausing it leaves a quorum with the leader, so publishes go on meanwhile.
  const follower = [0, 1, 2].find((i) => stack.natsNode(i).name !== info.cluster!.leader)!;
  const node = stack.natsNode(follower);
  // Publish through the leader's node: a client on the paused node would wait on a silent socket.
  const leader = [0, 1, 2].find((i) => stack.natsNode(i).name === info.cluster!.leader)!;
  const pub = await connectNats({ url: stack.natsNode(leader).url, name: "cluster test publisher", log: quiet });
  const pid = node.pid()!;
  process.kill(pid, "SIGSTOP");
  let published = 0;
  try {
    // Publishes go on for longer than raft's shortest election timeout (4 s): when the node wakes,
    // its own election timer has expired, and it must rejoin as a follower and fetch what it missed.
    const until = Date.now() + 4500;
    while (Date.now() < until) {
      await pub.js.publish(`${stream}.x`, new TextEncoder().encode(String(published)), { timeout: 2000 });
      published++;
      await Bun.sleep(50);
    }
    const s = await streamInfo(pub.jsm, stream);
    expect(s.cluster?.replicas?.find((x) => x.name === node.name)?.current).toBe(false);
  } finally {
    process.kill(pid, "SIGCONT");
  }
  await pub.close();
  expect(published).toBeGreaterThan(20);
  const caughtUp = await eventually(async () => {
    const s = await streamInfo(nats.jsm, stream);
    const r = s.cluster?.replicas?.find((x) => x.name === node.name);
    if (!r?.current || (r.lag ?? 0) > 0) throw new Error("not caught up");
    return s;
  }, 30_000); // ~1-5 s here; 15 s ran out once in a clean CI run on a loaded machine
  expect(caughtUp.state.messages).toBe(published);
  // The node itself holds every message: ask its own monitoring endpoint.
  const held = await eventually(async () => {
    const r = await fetch(`${node.monitorUrl}/jsz?streams=true`).then((x) => x.json());
    const accounts = (r.account_details ?? []) as { stream_detail?: { name: string; state: { messages: number } }[] }[];
    const n = accounts.flatMap((a) => a.stream_detail ?? []).find((d) => d.name === stream)?.state.messages;
    if (n !== published) throw new Error(`node holds ${n} of ${published}`);
    return n;
  });
  expect(held).toBe(published);
}, 60_000);

test("cluster - a service on a paused node leaves it for another member within a few pings", async () => {
  const pingIntervalMs = 500;
  const client = await connectNats({ url: stack.natsUrl, name: "cluster test paused", log: quiet, pingIntervalMs });
  // The member this client landed on (nats.js shuffles NATS_URL's servers).
  const on = client.nc.getServer();
  const index = [0, 1, 2].find((i) => new URL(stack.natsNode(i).url).port === on.split(":").pop())!;
  const pid = stack.natsNode(index).pid()!;
  process.kill(pid, "SIGSTOP");
  const t0 = performance.now();
  try {
    await eventually(async () => {
      if (client.nc.getServer() === on || !client.connected()) throw new Error(`still on ${on}`);
    }, 10_000);
    // Stale after three pings (1.5 s), then one 2 s attempt on the stopped node (nats.js retries
    // the server it lost first) and the next member: ~3.5 s. With a 10 s connection attempt it
    // took ~11.5 s; with the library's default pings (2 minutes) minutes.
    expect(performance.now() - t0).toBeLessThan(6_000);
    await client.nc.flush();
  } finally {
    process.kill(pid, "SIGCONT");
    await client.close();
  }
}, 30_000);

test("cluster - a service starting while its server does not answer yet tries again, within the first connection's budget", async () => {
  const node = stack.natsNode(2);
  const pid = node.pid()!;
  process.kill(pid, "SIGSTOP");
  const lines: string[] = [];
  // Stopped for sure before the clock starts (once in CI the client connected at 505 ms, as if the
  // node ran again by then: the node's state is now checked, and the failure names the server).
  await eventually(async () => {
    if (processState(pid) !== "T") throw new Error(`node 2 (pid ${pid}) is not stopped yet: ${processState(pid)}`);
  }, 5_000);
  const resume = setTimeout(() => process.kill(pid, "SIGCONT"), 1_500);
  try {
    const t0 = performance.now();
    // One 500 ms attempt would fail; the first connection may take 5 s in all.
    const client = await connectNats({
      url: node.url,
      name: "cluster test late server",
      log: recordingLogger(lines),
      connectTimeoutMs: 500,
      firstConnectTimeoutMs: 5_000,
    });
    const took = performance.now() - t0;
    if (took <= 1_000)
      throw new Error(
        `connected in ${Math.round(took)} ms to ${client.nc.getServer()}, node 2 (${node.url}) state ${processState(pid)}; log: ${lines.join(" | ")}`,
      );
    expect(lines).toContain("nats did not answer in time: connecting again");
    await client.close();
  } finally {
    clearTimeout(resume);
    process.kill(pid, "SIGCONT");
  }
}, 30_000);

/**
 * The meta leader and one more member stopped: the survivor has no quorum and, once it notices (its
 * /jsz names no meta leader), its JetStream does not answer or answers "temporarily unavailable";
 * once they are back the cluster elects a meta leader, answering so meanwhile (~4 s measured). (Were
 * the survivor the leader, it would keep answering for ~20 s before it stepped down.)
 */
async function loseQuorum(): Promise<{ survivor: number; resume: () => void }> {
  const metaLeader = async (i: number): Promise<string | undefined> => {
    const jsz = await fetch(`${stack.natsNode(i).monitorUrl}/jsz`).then((r) => r.json());
    return jsz.meta_cluster?.leader || undefined;
  };
  const leaderName = await eventually(async () => (await metaLeader(0)) ?? Promise.reject(new Error("no meta leader yet")));
  const survivor = [0, 1, 2].find((i) => stack.natsNode(i).name !== leaderName)!;
  const pids = [0, 1, 2].filter((i) => i !== survivor).map((i) => stack.natsNode(i).pid()!);
  const resume = () => {
    for (const pid of pids) process.kill(pid, "SIGCONT");
  };
  for (const pid of pids) process.kill(pid, "SIGSTOP");
  try {
    await eventually(async () => {
      if (await metaLeader(survivor)) throw new Error("the survivor still follows a meta leader");
    }, 30_000);
  } catch (err) {
    resume();
    throw err;
  }
  return { survivor, resume };
}

const NOT_READY = "jetstream is not ready on this server yet: asking again";

test("cluster - a service starting while the cluster elects its JetStream leader waits for it, within the first connection's budget", async () => {
  // Before, connectNats failed at the first "temporarily unavailable".
  const { survivor, resume } = await loseQuorum();
  const lines: string[] = [];
  try {
    // The survivor still answers now and then: start clients until one is told to wait, then
    // bring the others back while it waits.
    let connecting: Promise<Nats> | undefined;
    await eventually(async () => {
      if (lines.includes(NOT_READY)) return;
      if (connecting) {
        const done = await Promise.race([connecting, Bun.sleep(100).then(() => undefined)]);
        if (done) {
          await done.close();
          connecting = undefined;
        }
      }
      connecting ??= connectNats({
        url: stack.natsNode(survivor).url,
        name: "cluster test electing",
        log: recordingLogger(lines),
        firstConnectTimeoutMs: 30_000,
      });
      throw new Error("not told to wait yet");
    }, 30_000);
    resume();
    const client = await connecting!;
    expect((await client.jsm.getAccountInfo()).api.total).toBeGreaterThan(0);
    await client.close();
  } finally {
    resume();
  }
}, 60_000);

test("cluster - the positions stream set up while the cluster elects its JetStream leader waits for it (a service's start after its connection)", async () => {
  // Connected before: the election starts between a service's connection and its stream's set-up.
  // Every member: whichever survives, this client is connected to it.
  const clients = await Promise.all(
    [0, 1, 2].map((i) => connectNats({ url: stack.natsNode(i).url, name: `cluster test stream ${i}`, log: quiet })),
  );
  const { survivor, resume } = await loseQuorum().catch(async (err) => {
    await Promise.all(clients.map((c) => c.close()));
    throw err;
  });
  const client = clients[survivor]!;
  const lines: string[] = [];
  const stream = uniqueName("EL");
  try {
    const setUp = ensurePositionsStream(client.jsm, {
      stream,
      subjects: `${stream}.>`,
      duplicateWindow: 60_000,
      streamMaxAge: 3_600_000,
      streamMaxBytes: 64 * 1024 ** 2,
      log: recordingLogger(lines),
    });
    let settled: unknown;
    setUp.then(
      () => (settled = "created"),
      (err) => (settled = err),
    );
    // Before, the first "temporarily unavailable" (or a request that timed out) failed the start.
    await eventually(async () => {
      if (settled !== undefined) throw new Error(`settled before the cluster came back: ${String(settled)}`);
      if (!lines.includes(NOT_READY)) throw new Error("not told to wait yet");
    }, 30_000).catch((err) => {
      if (settled instanceof Error) throw settled;
      throw err;
    });
    resume();
    const info = await setUp;
    expect(info.config.name).toBe(stream);
  } finally {
    resume();
    await Promise.all(clients.map((c) => c.close()));
  }
}, 90_000);
