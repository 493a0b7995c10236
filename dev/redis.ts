/** redis-server, for the development stack. */
import { mkdirSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import type { Server, ServerHost } from "./server";

/** Resolves when Redis answers PING with PONG (not -LOADING), rejects on anything else. */
function redisPing(port: number): Promise<void> {
  return new Promise((resolveP, reject) => {
    const socket = connect({ host: "127.0.0.1", port });
    let got = "";
    const done = (err?: Error) => {
      socket.destroy();
      if (err) reject(err);
      else resolveP();
    };
    socket.setTimeout(1000, () => done(new Error("redis ping timed out")));
    socket.once("error", done);
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.on("data", (b) => {
      got += b.toString();
      if (got.includes("\r\n")) done(got.startsWith("+PONG") ? undefined : new Error(`redis answered ${got.trim()}`));
    });
  });
}

/** Starts redis-server and waits until it answers PING. */
export async function startRedis(s: Server, host: ServerHost): Promise<void> {
  mkdirSync(join(host.dir, "redis"), { recursive: true });
  // No background saves while running (tests write a lot), one dump at a clean shutdown so that
  // stopService/startService keeps the data; an hourly save point only matters for a long `fleet up`.
  host.spawnServer(s, [
    host.binaries.redis!,
    "--port",
    String(s.port),
    "--bind",
    "127.0.0.1",
    "--save",
    "3600 1",
    "--appendonly",
    "no",
    "--dir",
    join(host.dir, "redis"),
    "--daemonize",
    "no",
    "--protected-mode",
    "no",
  ]);
  await host.waitReady(s, () => redisPing(s.port));
}
