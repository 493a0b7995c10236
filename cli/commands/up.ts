/** `fleet up`: the stack and all services in the foreground, until Ctrl-C. */
import { parseArgs } from "node:util";
import { loadConfig } from "../../lib/config";
import { startPlatform, untilSignal, type Endpoints } from "../platform";

/** The line that hands a person the live map, token included. */
export function describeMap(mapUrl: string | null): string {
  return mapUrl
    ? `Live map (a read-only watch token of every vehicle, valid 1 day, is in the fragment):\n  ${mapUrl}`
    : "Live map: not served (no tracker in this build)";
}

const help = `usage: fleet up [--json]

Starts, in the foreground, what the environment does not provide — nats-server with JetStream,
redis-server, PostgreSQL and an S3-compatible server, on free loopback ports in a temporary folder —
then the gateway, tracker, history and archiver services, and the live map page (web/, bundled at
start). Ctrl-C drains the services and stops it all.

  --json   print one JSON line when ready naming every endpoint
           (gateway, tracker, history, archiver, web, nats, redis, database, s3; null for a service not in this build)

Existing servers: set NATS_URL, REDIS_URL, DATABASE_URL, S3_ENDPOINT (+ S3_BUCKET, S3_ACCESS_KEY_ID,
S3_SECRET_ACCESS_KEY); ports: GATEWAY_PORT, TRACKER_PORT, HISTORY_PORT, ARCHIVER_PORT, WEB_PORT (the map). "fleet env" lists every variable.`;

/** Prints endpoints for a person. */
export function describeEndpoints(e: Endpoints): string {
  const row = (k: string, v: string | null, note = "") => `  ${k.padEnd(9)} ${v ?? "(not in this build)"}${note}`;
  return [
    row("gateway", e.gateway, e.gateway ? "   gRPC, gRPC-Web, Connect; /healthz (/metrics on each service's admin port, loopback)" : ""),
    row("tracker", e.tracker),
    row("history", e.history),
    row("archiver", e.archiver),
    row("web", e.web, e.web ? "   live map (open the URL with the token below)" : ""),
    row("nats", e.nats),
    row("redis", e.redis),
    row("database", e.database),
    row("s3", e.s3),
  ].join("\n");
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { json: { type: "boolean" }, help: { type: "boolean", short: "h" } } });
  if (values.help) {
    console.log(help);
    return 0;
  }
  const config = loadConfig();
  const progress = (line: string) => console.error(`fleet up: ${line}`);
  const platform = await startPlatform({ config, progress });
  if (values.json) console.log(JSON.stringify(platform.endpoints));
  else {
    console.log(
      `fleet is up:\n${describeEndpoints(platform.endpoints)}\n\n${describeMap(platform.mapUrl)}\n\nMint a token: bun cli/fleet.ts token vehicle truck-1\nCtrl-C to stop.`,
    );
  }
  const signal = await untilSignal();
  progress(`${signal}: draining services and stopping the stack`);
  await platform.stop();
  return 0;
}
