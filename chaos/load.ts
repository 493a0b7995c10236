/**
 * The steady small load of a chaos run: vehicles on the client library (client/vehicle-client.ts),
 * each given every gateway address, pushing a point every `intervalMs`. What counts at the end is
 * what each vehicle was told is acked: its durable seq (the client numbers points 1, 2, 3, …, so
 * seqs 1..durableSeq are the acked points).
 */
import { createVehicleClient, type VehicleClient } from "../client/vehicle-client";
import { mintVehicleToken } from "../lib/auth";
import { CHAOS_KEYS } from "./cluster";

export interface VehicleTally {
  vehicleId: string;
  /** Highest seq the gateway said is durable: seqs 1..durableSeq were acked. */
  durableSeq: number;
  pushed: number;
  rejected: number;
  dropped: number;
  failovers: number;
}

export interface Load {
  readonly clients: readonly VehicleClient[];
  /** Points acked so far, over every vehicle. */
  acked(): number;
  /** Stops pushing, waits (bounded) until every pushed point is acked, closes the clients. */
  stop(flushTimeoutMs?: number): Promise<VehicleTally[]>;
}

export interface LoadOptions {
  /** Gateway URLs; each vehicle uses the first and fails over to the next. */
  urls: readonly string[];
  /** Vehicle ids are `${prefix}${i}`. */
  prefix: string;
  vehicles?: number;
  intervalMs?: number;
}

export async function startLoad({ urls, prefix, vehicles = 10, intervalMs = 100 }: LoadOptions): Promise<Load> {
  const clients: VehicleClient[] = [];
  for (let i = 0; i < vehicles; i++) {
    const vehicleId = `${prefix}${i}`;
    clients.push(
      createVehicleClient({
        url: urls,
        vehicleId,
        token: await mintVehicleToken(CHAOS_KEYS, vehicleId, { fleetId: "chaos" }),
        rollEvery: { points: 20, ms: 250 },
        backoff: { initialMs: 100, maxMs: 1_000 },
        ackTimeoutMs: 5_000,
        resumeTimeoutMs: 5_000,
      }),
    );
  }
  let tick = 0;
  const timer = setInterval(() => {
    tick++;
    for (const [i, c] of clients.entries()) {
      c.push({ lat: 52.5 + i * 1e-3 + tick * 1e-5, lon: 13.4 + tick * 1e-5, speed: 8, heading: 45, accuracy: 5 });
    }
  }, intervalMs);
  return {
    clients,
    acked: () => clients.reduce((n, c) => n + c.stats.durableSeq, 0),
    async stop(flushTimeoutMs = 60_000) {
      clearInterval(timer);
      const flushed = Promise.all(clients.map((c) => c.flush()));
      const timedOut = await Promise.race([flushed.then(() => false), Bun.sleep(flushTimeoutMs).then(() => true)]);
      await Promise.all(clients.map((c) => c.close()));
      if (timedOut) {
        const waiting = clients.reduce((n, c) => n + c.stats.buffered, 0);
        console.error(`chaos: ${waiting} points still unacked after ${flushTimeoutMs} ms (not counted as acked, so not as lost)`);
      }
      return clients.map((c) => {
        const s = c.stats;
        return {
          vehicleId: c.vehicleId,
          durableSeq: s.durableSeq,
          pushed: s.pushed,
          rejected: s.rejected,
          dropped: s.dropped,
          failovers: s.failovers,
        };
      });
    },
  };
}
