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

const help = `usage: fleet up [--json] [--nats-nodes N] [--gateways N] [--trackers N] [--history N]

Starts, in the foreground, what the environment does not provide — nats-server with JetStream,
redis-server, PostgreSQL and an S3-compatible server, on free loopback ports in a temporary folder —
then the gateway, tracker, history and archiver services, and the live map page (web/, bundled at
start). Ctrl-C drains the services and stops it all.

  --json          print one JSON line when ready naming every endpoint
                  (gateway, tracker, history, archiver, web, nats, redis, database, s3; null for a service not in this build;
                  nats is the comma list of a cluster's servers)
  --nats-nodes N  N nats-servers forming one JetStream cluster on loopback (default 1; 3 for a cluster),
                  the positions stream at FLEET_STREAM_REPLICAS (3 on a cluster unless set)
  --gateways N    N gateway processes sharing GATEWAY_PORT (SO_REUSEPORT)
  --trackers N    N tracker processes (the first on TRACKER_PORT, the others on free ports)
  --history N     N history processes (the first on HISTORY_PORT, the others on free ports)

While it runs, .fleet/status.env names the stack's servers and every instance's admin URL: "fleet status"
reads it for the variables not set (a shell can too: set -a; . .fleet/status.env).

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

/** A count flag: a whole number from 1 to 16; else an error fleet.ts reports as a usage error (exit 2). */
function count(flag: string, raw: string | undefined): number {
  if (raw === undefined) return 1;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 16) {
    throw Object.assign(new Error(`--${flag} expects a whole number from 1 to 16, got "${raw}"`), {
      code: "ERR_PARSE_ARGS_INVALID_OPTION_VALUE",
    });
  }
  return n;
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
      "nats-nodes": { type: "string" },
      gateways: { type: "string" },
      trackers: { type: "string" },
      history: { type: "string" },
    },
  });
  if (values.help) {
    console.log(help);
    return 0;
  }
  const natsNodes = count("nats-nodes", values["nats-nodes"]);
  const instances = {
    gateway: count("gateways", values.gateways),
    tracker: count("trackers", values.trackers),
    history: count("history", values.history),
  };
  const config = loadConfig();
  const progress = (line: string) => console.error(`fleet up: ${line}`);
  const platform = await startPlatform({ config, progress, natsNodes, instances, record: true });
  if (values.json) console.log(JSON.stringify(platform.endpoints));
  else {
    const extra = [...platform.services.entries()].filter(([id]) => /-\d+$/.test(id)).map(([id, p]) => `  ${id.padEnd(9)} ${p.url}`);
    console.log(
      `fleet is up:\n${describeEndpoints(platform.endpoints)}${extra.length ? `\n${extra.join("\n")}` : ""}\n\n${describeMap(platform.mapUrl)}\n\nMint a token: bun cli/fleet.ts token vehicle truck-1\nCtrl-C to stop.`,
    );
  }
  const signal = await untilSignal();
  progress(`${signal}: draining services and stopping the stack`);
  await platform.stop();
  return 0;
}
