/** s3rver, for the development stack. */
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Server, ServerHost } from "./server";

const ROOT = resolve(import.meta.dir, "..");

/** Starts s3rver (on this bun) with the bucket configured and waits until it answers for it. */
export async function startS3(s: Server, host: ServerHost): Promise<void> {
  mkdirSync(join(host.dir, "s3"), { recursive: true });
  const cli = Bun.resolveSync("s3rver/bin/s3rver.js", ROOT);
  host.spawnServer(s, [
    process.execPath,
    cli,
    "-d",
    join(host.dir, "s3"),
    "-a",
    "127.0.0.1",
    "-p",
    String(s.port),
    "--configure-bucket",
    host.s3Bucket,
  ]);
  await host.waitReady(s, async () => {
    // Any HTTP answer for the bucket means s3rver listens and created it (a missing one says 404).
    const r = await fetch(`http://127.0.0.1:${s.port}/${host.s3Bucket}?list-type=2&max-keys=0`, { signal: AbortSignal.timeout(1000) });
    await r.arrayBuffer();
    if (r.status === 404 || r.status >= 500) throw new Error(`s3 answered ${r.status}`);
  });
}
