/** nats-server with JetStream, for the development stack. */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Server, ServerHost } from "./server";

/** Name a node of the stack's cluster goes by (stream info's `cluster.leader`, `replicas[].name`). */
export const natsNodeName = (node: number) => `fleet-n${node + 1}`;

/**
 * Starts nats-server (JetStream in the stack's folder, its own store per node) and waits until it
 * serves JetStream: a single server's /healthz, a cluster node's JetStream knowing the cluster's
 * meta leader. Not a cluster node's /healthz: 2.9 fails it for as long as any consumer it holds is
 * "not current", which an idle consumer of a restarted node can stay for minutes; whether a
 * restarted node caught up on a stream is the stream info's `replicas[].current` and `lag`.
 */
export async function startNats(s: Server, host: ServerHost): Promise<void> {
  const store = join(host.dir, s.id);
  mkdirSync(store, { recursive: true });
  // JetStream reserves each stream's max_bytes (FLEET_STREAM_MAX_BYTES, 10 GiB) against
  // max_file_store, which defaults to 75% of the free disk: a few streams (tests give each its
  // own) would use it up. A development stack takes the disk as it comes instead.
  const conf = join(host.dir, `${s.id}.conf`);
  let text = `jetstream { store_dir: ${JSON.stringify(store)}, max_file_store: 100T }\n`;
  if (s.cluster) {
    const routes = s.cluster.ports.filter((p) => p !== s.cluster!.port).map((p) => JSON.stringify(`nats-route://127.0.0.1:${p}`));
    text +=
      `server_name: ${natsNodeName(s.cluster.node)}\n` +
      `cluster { name: fleet-stack, listen: "127.0.0.1:${s.cluster.port}", routes: [${routes.join(", ")}] }\n`;
  }
  writeFileSync(conf, text);
  host.spawnServer(s, [
    host.binaries.nats!,
    "-a",
    "127.0.0.1",
    "-p",
    String(s.port),
    "-m",
    String(s.port2),
    "-c",
    conf,
    ...(s.cluster ? [] : ["-n", `fleet-stack-${s.port}`]),
  ]);
  await host.waitReady(s, async () => {
    if (s.cluster) {
      const r = await fetch(`http://127.0.0.1:${s.port2}/jsz`, { signal: AbortSignal.timeout(1000) });
      const jsz = (await r.json()) as { meta_cluster?: { leader?: string } };
      if (!jsz.meta_cluster?.leader) throw new Error("no JetStream meta leader yet");
      return;
    }
    const r = await fetch(`http://127.0.0.1:${s.port2}/healthz`, { signal: AbortSignal.timeout(1000) });
    if (!r.ok) throw new Error(`healthz ${r.status}`);
  });
}
