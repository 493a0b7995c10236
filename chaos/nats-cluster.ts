/**
 * A 3-node NATS JetStream cluster for the chaos runs, whose third node can live in a network
 * namespace of its own so that a fault can cut it off from the other two (`ip link set … down`).
 *
 * Not the stack's cluster (dev/nats.ts): that one listens on 127.0.0.1 only, which a namespace
 * cannot reach. Here the cluster routes go over a veth pair in a private /30 (10.203.N.0/30, N from
 * the process id) that exists only between this machine's namespaces; the isolated node's clients
 * reach it over a second pair (10.203.N.4/30), which stays up during a partition so that a client
 * on the minority side still talks to its node and sees its publishes fail. `no_advertise` keeps
 * clients on the servers their NATS_URL names: a majority-side client must not wander to the
 * minority node. Without root (no `ip netns`), all three nodes run on loopback and partition() is
 * unavailable.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort } from "../dev";

export interface ChaosNatsNode {
  readonly index: number;
  /** server_name, as stream info's cluster.leader names it. */
  readonly name: string;
  /** nats://HOST:PORT of this node's clients. */
  readonly url: string;
  pid(): number | undefined;
  /** "SIGKILL" a crash, "SIGTERM" a clean stop; waits for the exit. */
  stop(signal?: "SIGTERM" | "SIGKILL"): Promise<void>;
  /** Starts it again on its ports with its store and waits until it serves JetStream. */
  start(): Promise<void>;
}

export interface ChaosNatsCluster {
  readonly nodes: readonly ChaosNatsNode[];
  /** Comma list of every node's client URL. */
  readonly url: string;
  /** True when node 3 runs in its own network namespace (partition() works). */
  readonly isolated: boolean;
  /** Why isolated is false ("" when it is true). */
  readonly whyNotIsolated: string;
  /** Cuts node 3's cluster routes (its clients still reach it). */
  partition(): void;
  /** Restores them. */
  heal(): void;
  stop(): Promise<void>;
}

export interface ChaosNatsOptions {
  dir: string;
  /** Put node 3 in a network namespace (needs root and `ip`); default true. */
  isolate?: boolean;
}

const ip = (...args: string[]) => execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });

/** Why a network namespace cannot be made here, or "" when it can. */
export function netnsUnavailable(): string {
  if (process.getuid?.() !== 0) return "needs root for ip netns";
  try {
    execFileSync("ip", ["netns", "list"], { stdio: "ignore" });
    return "";
  } catch {
    return "needs root for ip netns (the ip command failed)";
  }
}

/** Starts the three nodes and waits until JetStream has a meta leader on each. */
export async function startChaosNats({ dir, isolate = true }: ChaosNatsOptions): Promise<ChaosNatsCluster> {
  const why = isolate ? netnsUnavailable() : "not asked for";
  const isolated = why === "";
  const tag = process.pid % 250;
  const ns = `fleet-chaos-${process.pid}`;
  // Interface names: at most 15 characters.
  const routeRoot = `fcr${process.pid}`.slice(0, 15);
  const routeNs = `fcn${process.pid}`.slice(0, 15);
  const clientRoot = `fcc${process.pid}`.slice(0, 15);
  const clientNs = `fcd${process.pid}`.slice(0, 15);
  const net = `10.203.${tag}`;
  if (isolated) {
    ip("netns", "add", ns);
    ip("link", "add", routeRoot, "type", "veth", "peer", "name", routeNs);
    ip("link", "add", clientRoot, "type", "veth", "peer", "name", clientNs);
    ip("link", "set", routeNs, "netns", ns);
    ip("link", "set", clientNs, "netns", ns);
    ip("addr", "add", `${net}.1/30`, "dev", routeRoot);
    ip("addr", "add", `${net}.5/30`, "dev", clientRoot);
    ip("netns", "exec", ns, "ip", "addr", "add", `${net}.2/30`, "dev", routeNs);
    ip("netns", "exec", ns, "ip", "addr", "add", `${net}.6/30`, "dev", clientNs);
    for (const dev of [routeRoot, clientRoot]) ip("link", "set", dev, "up");
    for (const dev of [routeNs, clientNs, "lo"]) ip("netns", "exec", ns, "ip", "link", "set", dev, "up");
  }
  // Root-namespace nodes route on the veth's address when there is one, so the isolated node can reach them.
  const routeHost = (i: number) => (isolated ? (i === 2 ? `${net}.2` : `${net}.1`) : "127.0.0.1");
  const clientHost = (i: number) => (isolated && i === 2 ? `${net}.6` : "127.0.0.1");
  const ports = await Promise.all(
    [0, 1, 2].map(async () => ({ client: await freePort(), monitor: await freePort(), route: await freePort() })),
  );
  const children: (ChildProcess | undefined)[] = [];
  const exits: Promise<void>[] = [];

  const spawnNode = (i: number) => {
    const store = join(dir, `nats-${i + 1}`);
    mkdirSync(store, { recursive: true });
    const routes = [0, 1, 2].filter((j) => j !== i).map((j) => JSON.stringify(`nats-route://${routeHost(j)}:${ports[j]!.route}`));
    const conf = join(dir, `nats-${i + 1}.conf`);
    writeFileSync(
      conf,
      `server_name: fleet-c${i + 1}\nlisten: "${clientHost(i)}:${ports[i]!.client}"\nhttp: "${clientHost(i)}:${ports[i]!.monitor}"\n` +
        `jetstream { store_dir: ${JSON.stringify(store)}, max_file_store: 100T }\n` +
        `cluster { name: fleet-chaos, listen: "${routeHost(i)}:${ports[i]!.route}", no_advertise: true, routes: [${routes.join(", ")}] }\n`,
    );
    const argv = ["nats-server", "-c", conf];
    // `ip netns exec` execs the server itself: the child's pid is nats-server's (SIGSTOP reaches it).
    const child = isolated && i === 2 ? spawn("ip", ["netns", "exec", ns, ...argv]) : spawn(argv[0]!, argv.slice(1));
    const log = createWriteStream(join(dir, `nats-${i + 1}.log`), { flags: "a" });
    child.stdout!.pipe(log);
    child.stderr!.pipe(log);
    children[i] = child;
    exits[i] = new Promise((resolve) => child.once("exit", () => resolve()));
  };

  const running = (i: number) => {
    const c = children[i];
    return c !== undefined && c.exitCode === null && c.signalCode === null;
  };

  const waitReady = async (i: number, timeoutMs = 30_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const r = await fetch(`http://${clientHost(i)}:${ports[i]!.monitor}/jsz`, { signal: AbortSignal.timeout(1000) });
        const jsz = (await r.json()) as { meta_cluster?: { leader?: string } };
        if (jsz.meta_cluster?.leader) return;
      } catch {
        // not up yet
      }
      if (!running(i)) throw new Error(`nats node ${i + 1} exited; see ${join(dir, `nats-${i + 1}.log`)}`);
      if (Date.now() > deadline) throw new Error(`nats node ${i + 1} has no JetStream meta leader after ${timeoutMs} ms`);
      await Bun.sleep(100);
    }
  };

  const nodes: ChaosNatsNode[] = [0, 1, 2].map((i) => ({
    index: i,
    name: `fleet-c${i + 1}`,
    url: `nats://${clientHost(i)}:${ports[i]!.client}`,
    pid: () => (running(i) ? children[i]!.pid : undefined),
    async stop(signal = "SIGTERM") {
      if (!running(i)) return;
      children[i]!.kill("SIGCONT"); // a paused node cannot act on SIGTERM
      children[i]!.kill(signal);
      await exits[i];
    },
    async start() {
      if (running(i)) return;
      spawnNode(i);
      await waitReady(i);
    },
  }));

  const teardown = () => {
    if (!isolated) return;
    for (const args of [
      ["link", "del", routeRoot],
      ["link", "del", clientRoot],
      ["netns", "del", ns],
    ]) {
      try {
        ip(...args);
      } catch {
        // already gone
      }
    }
  };

  // A run that dies must not leave the namespace, its links or its servers behind.
  const onExit = () => {
    for (const c of children) c?.kill("SIGKILL");
    teardown();
  };
  process.once("exit", onExit);
  try {
    for (const i of [0, 1, 2]) spawnNode(i);
    await Promise.all([0, 1, 2].map((i) => waitReady(i)));
  } catch (err) {
    for (const c of children) c?.kill("SIGKILL");
    teardown();
    throw err;
  }
  const linkSet = (state: "up" | "down") => {
    if (!isolated) throw new Error(`a partition ${why}`);
    ip("link", "set", routeRoot, state);
  };
  return {
    nodes,
    url: nodes.map((n) => n.url).join(","),
    isolated,
    whyNotIsolated: isolated ? "" : why,
    partition: () => linkSet("down"),
    heal: () => linkSet("up"),
    async stop() {
      if (isolated) linkSet("up");
      await Promise.all(nodes.map((n) => n.stop("SIGTERM")));
      teardown();
      process.off("exit", onExit);
    },
  };
}
