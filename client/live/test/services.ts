/**
 * What the live client's tests (and the browser tests of the pages built on it) stand on: the
 * shared test stack's NATS and Redis (PostgreSQL too with history), a gateway and one or more
 * trackers as real processes (a tracker must be SIGKILLable), vehicles sending real points through
 * the vehicle client library, and tokens of this run's secret. Each run keeps to its own Redis
 * prefix and history schema, and its vehicle ids are unique.
 */
import { join } from "node:path";
import { createVehicleClient, type VehicleClient } from "../../vehicle-client";
import { freePort, startServiceProcess, testStack, type ServiceProcess, type Stack } from "../../../dev";
import { mintVehicleToken, mintWatchToken, type WatchGrant } from "../../../lib/auth";

export const LIVE_TEST_KEYS = { secret: "live-client-test-secret-of-at-least-32-bytes", issuer: "fleet", audience: "fleet" } as const;

export interface LiveServices {
  readonly stack: Stack;
  readonly gatewayUrl: string;
  /** Tracker processes in start order (a killed one stays in the list, dead). */
  readonly trackers: ServiceProcess[];
  readonly history: ServiceProcess | undefined;
  /** Starts one more tracker on the same Redis prefix and consumer. */
  startTracker(): Promise<ServiceProcess>;
  /** A vehicle on the client library; `send` pushes a point and waits until it is acked. */
  vehicle(id: string, fleetId?: string): Promise<TestVehicle>;
  watchToken(grant: WatchGrant): Promise<string>;
  /** A unique id for this run: `${label}-…`. */
  unique(label: string): string;
  stop(): Promise<void>;
}

export interface TestVehicle {
  readonly id: string;
  readonly client: VehicleClient;
  /** Pushes a point (status and order optional) and resolves once the gateway acked it; returns its seq. */
  send(p: { lat: number; lon: number; orderId?: string; status?: number }): Promise<number>;
}

export interface LiveServicesOptions {
  trackers?: number;
  /** Start a history process (and PostgreSQL). */
  history?: boolean;
  /** More environment for every service. */
  env?: Record<string, string>;
}

let runs = 0;

export async function startLiveServices({
  trackers = 1,
  history = false,
  env: extra = {},
}: LiveServicesOptions = {}): Promise<LiveServices> {
  const stack = await testStack(history ? ["nats", "redis", "postgres"] : ["nats", "redis"]);
  const run = `lc${process.pid}x${Date.now().toString(36)}${++runs}`;
  const env: Record<string, string> = {
    ...(stack.env() as Record<string, string>),
    FLEET_JWT_SECRET: LIVE_TEST_KEYS.secret,
    FLEET_JWT_ISSUER: LIVE_TEST_KEYS.issuer,
    FLEET_JWT_AUDIENCE: LIVE_TEST_KEYS.audience,
    GATEWAY_MAX_FIX_RATE: "0",
    // Test vehicles jump tens of metres between points sent milliseconds apart.
    GATEWAY_MAX_SPEED: "100000",
    TRACKER_PORT: "0",
    HISTORY_PORT: "0",
    TRACKER_REDIS_PREFIX: `${run}:`,
    HISTORY_DB_SCHEMA: run,
    // Offline in seconds, so that a test can see it.
    TRACKER_STALE_AFTER: "2s",
    TRACKER_SWEEP_INTERVAL: "500ms",
    // One tracker sweeps; when a test kills it, another takes the sweep over within seconds.
    FLEET_LEADER_INTERVAL: "1s",
    // info: the "listening" line is what startServiceProcess waits for.
    LOG_LEVEL: "info",
    ...extra,
  };
  const procs: ServiceProcess[] = [];
  const start = async (service: string, more: Record<string, string> = {}) => {
    const p = await startServiceProcess({
      service,
      env: { ...env, ...more },
      logFile: join(stack.dir, `${run}-${service}-${procs.length}.log`),
    });
    procs.push(p);
    return p;
  };
  const clients: VehicleClient[] = [];
  try {
    const gateway = await start("gateway", { GATEWAY_PORT: String(await freePort()) });
    const trackerProcs: ServiceProcess[] = [];
    for (let i = 0; i < trackers; i++) trackerProcs.push(await start("tracker"));
    const historyProc = history ? await start("history") : undefined;
    let n = 0;
    return {
      stack,
      gatewayUrl: gateway.url,
      trackers: trackerProcs,
      history: historyProc,
      async startTracker() {
        const t = await start("tracker");
        trackerProcs.push(t);
        return t;
      },
      async vehicle(id, fleetId = "") {
        const client = createVehicleClient({
          url: gateway.url,
          vehicleId: id,
          token: await mintVehicleToken(LIVE_TEST_KEYS, id, { fleetId }),
          rollEvery: { points: 1, ms: 50 },
          backoff: { initialMs: 50, maxMs: 500 },
        });
        clients.push(client);
        return {
          id,
          client,
          async send({ lat, lon, orderId = "", status = 0 }) {
            client.push({ lat, lon, speed: 5, heading: 90, accuracy: 5, orderId, status });
            await client.flush();
            return client.stats.durableSeq;
          },
        };
      },
      watchToken: (grant) => mintWatchToken(LIVE_TEST_KEYS, grant),
      unique: (label) => `${label}-${run}-${++n}`,
      async stop() {
        await Promise.all(clients.map((c) => c.close().catch(() => {})));
        await Promise.all(procs.map((p) => p.stop("SIGKILL")));
      },
    };
  } catch (err) {
    await Promise.all(procs.map((p) => p.stop("SIGKILL")));
    throw err;
  }
}

/** Waits until `check` is true; throws naming `what` after `timeoutMs`. */
export async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(20);
  }
}
