/** nats-server with JetStream, for the development stack. */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Server, ServerHost } from "./server";

/** Starts nats-server (JetStream in the stack's folder) and waits for its /healthz. */
export async function startNats(s: Server, host: ServerHost): Promise<void> {
  mkdirSync(join(host.dir, "nats"), { recursive: true });
  // JetStream reserves each stream's max_bytes (FLEET_STREAM_MAX_BYTES, 10 GiB) against
  // max_file_store, which defaults to 75% of the free disk: a few streams (tests give each its
  // own) would use it up. A development stack takes the disk as it comes instead.
  const conf = join(host.dir, "nats.conf");
  writeFileSync(conf, `jetstream { store_dir: ${JSON.stringify(join(host.dir, "nats"))}, max_file_store: 100T }\n`);
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
    "-n",
    `fleet-stack-${s.port}`,
  ]);
  await host.waitReady(s, async () => {
    const r = await fetch(`http://127.0.0.1:${s.port2}/healthz`, { signal: AbortSignal.timeout(1000) });
    if (!r.ok) throw new Error(`healthz ${r.status}`);
  });
}
