/**
 * Starts the whole platform for `fleet up` and `fleet demo`: the stack (what the environment does not
 * give), then every service that exists in this checkout as its own process.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mintWatchToken, tokenKeys } from "../lib/auth";
import type { Config } from "../lib/config";
import { startStack, startServiceProcess, type Stack, type ServiceProcess } from "../dev";
import { removeUpRecord, writeUpRecord } from "./up-record";
import { pageUrl, startWebApp, type WebApp } from "./web";

const root = join(import.meta.dir, "..");

/** Services in start order, with the variable that sets each one's port. */
const SERVICES = [
  { name: "gateway", portVar: "GATEWAY_PORT", port: (c: Config) => c.gatewayPort },
  { name: "tracker", portVar: "TRACKER_PORT", port: (c: Config) => c.trackerPort },
  { name: "history", portVar: "HISTORY_PORT", port: (c: Config) => c.historyPort },
  { name: "archiver", portVar: "ARCHIVER_PORT", port: (c: Config) => c.archiverPort },
] as const;

export interface Endpoints {
  gateway: string | null;
  tracker: string | null;
  history: string | null;
  archiver: string | null;
  /** The live map page (without a token; see Platform.mapUrl). */
  web: string | null;
  nats: string;
  redis: string;
  database: string;
  s3: string;
}

export interface Platform {
  endpoints: Endpoints;
  stack: Stack;
  logDir: string;
  /** Every service process by instance: "gateway", "gateway-2", … */
  services: Map<string, ServiceProcess>;
  /** The live map page with a fresh read-only watch token of every vehicle in its fragment; null without a tracker. */
  mapUrl: string | null;
  /** Drains the services (SIGTERM), then stops what the stack started. */
  stop(): Promise<void>;
}

export interface StartPlatformOptions {
  config: Config;
  /** Progress lines for a person ("starting nats-server…"). */
  progress?: (line: string) => void;
  /** nats-servers of the stack: several form one JetStream cluster (default 1). */
  natsNodes?: number;
  /** Processes of each service (default 1 each; the archiver always runs one). */
  instances?: Partial<Record<"gateway" | "tracker" | "history", number>>;
  /** Write `.fleet/status.env` (what `fleet status` reads) once up, and remove it at stop. */
  record?: boolean;
}

/** Starts stack and services; on any failure stops what it started and throws. */
export async function startPlatform({
  config,
  progress = () => {},
  natsNodes = 1,
  instances = {},
  record = false,
}: StartPlatformOptions): Promise<Platform> {
  const logDir = join(root, ".fleet", "logs");
  mkdirSync(logDir, { recursive: true });
  progress(
    "starting the stack (NATS JetStream, Redis, PostgreSQL, S3) — servers given by NATS_URL, REDIS_URL, DATABASE_URL, S3_ENDPOINT are used as they are",
  );
  if (natsNodes > 1) progress(`NATS: a JetStream cluster of ${natsNodes} nats-servers on loopback, each with its own store`);
  const stack = await startStack({ services: ["nats", "redis", "postgres", "s3"], natsNodes });
  // On a cluster the stream is replicated unless the operator said otherwise.
  const clusterEnv: Record<string, string> =
    stack.natsNodes > 1 && !process.env.FLEET_STREAM_REPLICAS ? { FLEET_STREAM_REPLICAS: String(Math.min(3, stack.natsNodes)) } : {};
  const services = new Map<string, ServiceProcess>();
  let web: WebApp | undefined;
  let webDir: string | undefined;
  const stop = async () => {
    if (record) removeUpRecord();
    await web?.stop();
    if (webDir) rmSync(webDir, { recursive: true, force: true });
    await Promise.all([...services.values()].reverse().map((s) => s.stop("SIGTERM", config.drainTimeout + 5000)));
    await stack.stop();
  };
  let mapUrl: string | null = null;
  const urls: Record<string, string | null> = {};
  try {
    for (const svc of SERVICES) {
      if (!existsSync(join(root, svc.name, "main.ts"))) {
        urls[svc.name] = null;
        continue;
      }
      const count = svc.name === "archiver" ? 1 : (instances[svc.name] ?? 1);
      for (let i = 1; i <= count; i++) {
        const id = i === 1 ? svc.name : `${svc.name}-${i}`;
        // Gateways share their port (SO_REUSEPORT: the kernel spreads connections over them); a
        // further tracker or history process takes any free port, named in its "listening" line.
        const shared = svc.name === "gateway" && count > 1;
        const port = i === 1 || shared ? svc.port(config) : 0;
        const logFile = join(logDir, `${id}.log`);
        progress(`starting ${id} on ${config.host}:${port || "(a free port)"} (log: ${logFile})`);
        const proc = await startServiceProcess({
          service: svc.name,
          env: { ...stack.env(), ...clusterEnv, [svc.portVar]: String(port), ...(shared ? { GATEWAY_REUSE_PORT: "true" } : {}) },
          logFile,
        });
        services.set(id, proc);
        if (i === 1) urls[svc.name] = proc.url;
      }
    }
    if (urls.tracker) {
      // A folder per process: two `fleet up` at once must not serve each other's bundle.
      webDir = mkdtempSync(join(tmpdir(), "fleet-web-"));
      progress(`bundling web/app.ts and serving the live map on ${config.host}:${config.webPort}`);
      web = await startWebApp({
        trackerUrl: urls.tracker,
        historyUrl: urls.history ?? "",
        mapStyle: config.webMapStyle,
        outDir: webDir,
        host: config.host,
        port: config.webPort,
      });
      urls.web = web.url;
      // Read-only (no dispatch) and for every vehicle, as `fleet token watch --all` mints it.
      mapUrl = pageUrl(web.url, await mintWatchToken(tokenKeys(config), { all: true, subject: "fleet-up-map" }));
    }
    if (record) {
      writeUpRecord({
        NATS_URL: stack.natsUrl,
        NATS_MONITOR_URL: Array.from({ length: stack.natsNodes }, (_, i) => stack.natsNode(i).monitorUrl).join(","),
        // Every instance by the admin URL its "admin listening" line gave.
        FLEET_ADMIN_URLS: [...services.entries()]
          .filter(([, p]) => p.adminUrl)
          .map(([id, p]) => `${id}=${p.adminUrl}`)
          .join(","),
        REDIS_URL: stack.redisUrl,
        DATABASE_URL: stack.databaseUrl,
      });
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    endpoints: {
      gateway: urls.gateway ?? null,
      tracker: urls.tracker ?? null,
      history: urls.history ?? null,
      archiver: urls.archiver ?? null,
      web: urls.web ?? null,
      nats: stack.natsUrl,
      redis: stack.redisUrl,
      database: stack.databaseUrl,
      s3: `${stack.s3.endpoint}/${stack.s3.bucket}`,
    },
    stack,
    logDir,
    services,
    mapUrl,
    stop,
  };
}

/** Resolves on the first SIGINT or SIGTERM. */
export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals) => {
      process.off("SIGINT", on);
      process.off("SIGTERM", on);
      resolve(sig);
    };
    process.on("SIGINT", on);
    process.on("SIGTERM", on);
  });
}
