/**
 * Drives N simulated vehicles against a gateway, in real time, with the vehicle client library:
 * each vehicle reports every `intervalMs` from a plausible route (see route.ts), a few fixes are
 * deliberately bad, and now and then a vehicle loses its connection and resumes.
 *
 * Many vehicles share a few HTTP/2 connections (one connect transport per `vehiclesPerConnection`),
 * and one ticker drives every vehicle: no timer per vehicle or per point.
 */
import type { Transport } from "@connectrpc/connect";
import { RejectReason, type Rejection } from "../gen/fleet/v1/ingest_pb";
import { mintVehicleToken, type TokenKeys } from "../lib/auth";
import { silentLogger, type Logger } from "../lib/log";
import { createIngestTransport, createVehicleClient, type VehicleClient, type VehicleClientOptions } from "../client/vehicle-client";
import { createCity, createRng, createVehicleModel, type CityOptions, type VehicleModel } from "./route";

export interface SimulatorOptions {
  /** Gateway base URL (http:// for h2c, https:// for TLS). */
  url: string;
  /** Keys that sign the vehicle tokens (the simulator is a local tool; `tokenKeys(loadConfig())`). */
  keys: TokenKeys;
  /** Vehicles to drive. */
  vehicles?: number;
  /** How often each vehicle reports, ms. */
  intervalMs?: number;
  /** Stop after this many ms (0: run until `stop()`). */
  durationMs?: number;
  /** City centre the street grid is laid around. */
  center?: { lat: number; lon: number };
  /** More city shape (grid size, spacing, rotation). */
  city?: Omit<CityOptions, "center">;
  /** Share of fixes that are deliberately bad (NaN, out of range, future time). */
  badFixRate?: number;
  /** Chance per report that a vehicle drops its connection (the client resumes). */
  disconnectRate?: number;
  /** Vehicles per HTTP/2 connection (the gateway allows 1000 streams per connection by default). */
  vehiclesPerConnection?: number;
  /** Fleets the vehicles are spread over: "fleet-1".."fleet-N". */
  fleets?: number;
  /** Vehicle ids are `${idPrefix}${n}`. */
  idPrefix?: string;
  /** Seed of the routes (same seed, same routes). */
  seed?: number;
  /** Skip TLS certificate checks (self-signed local certificates). */
  insecure?: boolean;
  /** Passed to every vehicle client (rollEvery, backoff, bufferLimit…). */
  client?: Pick<VehicleClientOptions, "rollEvery" | "backoff" | "bufferLimit" | "ackTimeoutMs">;
  /** Called for every vehicle client created. */
  onVehicle?: (client: VehicleClient, vehicleId: string) => void;
  /** Called when a vehicle's durable seq advances (tests use it to know what the gateway promised). */
  onAck?: (vehicleId: string, durableSeq: number) => void;
  /** Called for every refused point. */
  onReject?: (vehicleId: string, rejection: Rejection) => void;
  log?: Logger;
}

export interface SimulatorStats {
  vehicles: number;
  /** Vehicles whose last call to the gateway went through. */
  connected: number;
  /** Points handed to the clients. */
  sent: number;
  /** Points the gateway said are durable. */
  acked: number;
  /** Refused points by reason name (e.g. INVALID_COORDINATES). */
  rejected: Record<string, number>;
  /** Deliberately bad fixes sent. */
  badFixes: number;
  /** Disconnects the simulator caused. */
  disconnects: number;
  /** Reconnects the clients made (caused or not). */
  reconnects: number;
  /** Points dropped by full client buffers. */
  dropped: number;
  /** Points waiting for an ack. */
  buffered: number;
  /** Vehicles stopped on an error (bad token...). */
  failed: number;
  /** ms since start. */
  elapsedMs: number;
}

export interface Simulator {
  /** Mints tokens, connects and starts driving. Resolves once every vehicle is on the road. */
  start(): Promise<void>;
  /** Stops driving, flushes (bounded by `timeoutMs`) and closes every client. */
  stop(timeoutMs?: number): Promise<void>;
  /** Resolves when `durationMs` has passed and the simulator stopped (never, with durationMs 0, until `stop()`). */
  readonly done: Promise<void>;
  stats(): SimulatorStats;
  readonly clients: readonly VehicleClient[];
}

interface SimVehicle {
  model: VehicleModel;
  client: VehicleClient;
  nextAt: number;
  lastStepAt: number;
}

/** Creates a simulator; nothing happens until `start()`. */
export function createSimulator({
  url,
  keys,
  vehicles = 50,
  intervalMs = 1000,
  durationMs = 0,
  center = { lat: 52.52, lon: 13.405 },
  city: cityOptions = {},
  badFixRate = 0.002,
  disconnectRate = 0.001,
  vehiclesPerConnection = 500,
  fleets = 3,
  idPrefix = "veh-",
  seed = 1,
  insecure = false,
  client: clientOptions = {},
  onVehicle,
  onAck,
  onReject: onRejectHook,
  log = silentLogger,
}: SimulatorOptions): Simulator {
  const city = createCity({ ...cityOptions, center });
  const rng = createRng(seed);
  const sims: SimVehicle[] = [];
  const clients: VehicleClient[] = [];
  const rejected: Record<string, number> = {};
  let badFixes = 0;
  let disconnects = 0;
  let startedAt = 0;
  let ticker: ReturnType<typeof setInterval> | undefined;
  let durationTimer: ReturnType<typeof setTimeout> | undefined;
  let stopping: Promise<void> | undefined;
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));

  const countReject = (r: Rejection) => {
    const name = RejectReason[r.reason] ?? String(r.reason);
    rejected[name] = (rejected[name] ?? 0) + 1;
  };

  const tick = () => {
    const now = Date.now();
    for (const v of sims) {
      if (now < v.nextAt) continue;
      // Vehicles report on their own phase; a late tick does not make them burst.
      v.nextAt = Math.max(v.nextAt + intervalMs, now);
      const dt = (now - v.lastStepAt) / 1000;
      v.lastStepAt = now;
      v.model.step(dt, (now - startedAt) / 1000);
      const fix = v.model.fix(now);
      if (fix.bad) badFixes++;
      v.client.push(fix.position);
      if (disconnectRate > 0 && rng() < disconnectRate) {
        disconnects++;
        v.client.disconnect();
      }
    }
  };

  const stats = (): SimulatorStats => {
    const s: SimulatorStats = {
      vehicles: sims.length,
      connected: 0,
      sent: 0,
      acked: 0,
      rejected: { ...rejected },
      badFixes,
      disconnects,
      reconnects: 0,
      dropped: 0,
      buffered: 0,
      failed: 0,
      elapsedMs: startedAt ? Date.now() - startedAt : 0,
    };
    for (const c of clients) {
      const cs = c.stats;
      if (cs.connected) s.connected++;
      if (c.error) s.failed++;
      s.sent += cs.pushed;
      s.acked += cs.acked;
      s.reconnects += cs.reconnects;
      s.dropped += cs.dropped;
      s.buffered += cs.buffered;
    }
    return s;
  };

  const stop = (timeoutMs = 10_000): Promise<void> => {
    stopping ??= (async () => {
      if (ticker) clearInterval(ticker);
      if (durationTimer) clearTimeout(durationTimer);
      const flushed = Promise.allSettled(clients.map((c) => c.flush()));
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([flushed, new Promise((r) => (timer = setTimeout(r, timeoutMs)))]);
      clearTimeout(timer);
      await Promise.all(clients.map((c) => c.close()));
      log.info("simulator stopped", { ...stats() });
      resolveDone();
    })();
    return stopping;
  };

  return {
    clients,
    done,
    stats,
    stop,
    async start() {
      const transports: Transport[] = [];
      const connections = Math.max(1, Math.ceil(vehicles / vehiclesPerConnection));
      for (let k = 0; k < connections; k++) transports.push(createIngestTransport({ url, insecure }));
      startedAt = Date.now();
      for (let n = 1; n <= vehicles; n++) {
        const vehicleId = `${idPrefix}${n}`;
        const fleetId = `fleet-${((n - 1) % fleets) + 1}`;
        const token = await mintVehicleToken(keys, vehicleId, { fleetId });
        const client = createVehicleClient({
          ...clientOptions,
          vehicleId,
          token,
          transport: transports[n % connections],
          onReject: onRejectHook
            ? (r) => {
                countReject(r);
                onRejectHook(vehicleId, r);
              }
            : countReject,
          onAck: onAck ? (seq) => onAck(vehicleId, seq) : undefined,
          log,
        });
        clients.push(client);
        onVehicle?.(client, vehicleId);
        sims.push({
          model: createVehicleModel(city, vehicleId, createRng(seed * 1_000_003 + n), { badFixRate }),
          client,
          // Spread the first reports over one interval so that the load is even.
          nextAt: startedAt + Math.floor(((n - 1) / vehicles) * intervalMs),
          lastStepAt: startedAt,
        });
      }
      log.info("simulator started", { vehicles, intervalMs, connections, url });
      ticker = setInterval(tick, Math.max(10, Math.min(100, intervalMs / 10)));
      if (durationMs > 0) durationTimer = setTimeout(() => void stop(), durationMs);
    },
  };
}
