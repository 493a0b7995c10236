/**
 * The one checker of every chaos fault: each point a vehicle was told is acked is in PostgreSQL
 * exactly once (counted by vehicle and seq), the tracker holds each vehicle's newest acked point,
 * and history's own count (positions_rollup, kept in the insert's transaction) equals the acked
 * count. The sinks trail the gateway, so it waits (bounded) for them to catch up before judging:
 * a sink whose pull request was lost with a paused node waits for its missed heartbeats (nats.js
 * consume(): 30 s expiry, heartbeats every 15 s) before it pulls again, hence 90 s.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import postgres from "postgres";
import { TrackerService } from "../gen/fleet/v1/tracker_pb";
import { mintWatchToken } from "../lib/auth";
import { CHAOS_KEYS, type ChaosCluster } from "./cluster";
import type { VehicleTally } from "./load";

export interface CheckResult {
  /** Points the vehicles were told are acked. */
  acked: number;
  /** Rows in PostgreSQL for those vehicles. */
  stored: number;
  /** Acked points not in PostgreSQL: the figure that must be 0. */
  lost: number;
  /** (vehicle, seq) pairs stored more than once. */
  duplicates: number;
  /** Vehicles whose tracker state is not their newest acked point. */
  trackerBehind: string[];
  /** History's count (sum of positions_rollup.points) for those vehicles. */
  historyCount: number;
  /** Each broken rule in words; empty when all hold. */
  problems: string[];
  /** How long the sinks took to hold every acked point, from the start of the check. */
  waitedMs: number;
}

/** Checks the tallies against PostgreSQL and the trackers; waits up to `timeoutMs` for the sinks to catch up. */
export async function check(cluster: ChaosCluster, tallies: readonly VehicleTally[], timeoutMs = 90_000): Promise<CheckResult> {
  const sql = postgres(cluster.stack.databaseUrl, { max: 1, onnotice: () => {}, connection: { search_path: cluster.schema } });
  const token = await mintWatchToken(CHAOS_KEYS, { all: true, subject: "chaos-checker" });
  const ids = tallies.map((t) => t.vehicleId);
  const acked = tallies.reduce((n, t) => n + t.durableSeq, 0);
  const started = Date.now();
  const deadline = started + timeoutMs;
  try {
    for (;;) {
      const r = await judge();
      if (r.problems.length === 0 || Date.now() > deadline) return r;
      await Bun.sleep(250);
    }
  } finally {
    await sql.end();
  }

  async function judge(): Promise<CheckResult> {
    const rows = await sql<{ vehicle_id: string; seq: string; n: number }[]>`
      SELECT vehicle_id, seq, count(*)::int AS n FROM positions WHERE vehicle_id = ANY(${ids}) GROUP BY 1, 2`;
    const have = new Map<string, Set<number>>();
    let stored = 0;
    let duplicates = 0;
    for (const r of rows) {
      stored += r.n;
      if (r.n > 1) duplicates++;
      let s = have.get(r.vehicle_id);
      if (!s) have.set(r.vehicle_id, (s = new Set()));
      s.add(Number(r.seq));
    }
    let lost = 0;
    for (const t of tallies) {
      const s = have.get(t.vehicleId);
      for (let seq = 1; seq <= t.durableSeq; seq++) if (!s?.has(seq)) lost++;
    }
    const [h] = await sql<{ n: number }[]>`SELECT coalesce(sum(points), 0)::int AS n FROM positions_rollup WHERE vehicle_id = ANY(${ids})`;
    const historyCount = h!.n;
    const trackerBehind = await trackerCheck();
    const problems: string[] = [];
    if (lost > 0) problems.push(`${lost} acked points are not in PostgreSQL`);
    if (duplicates > 0) problems.push(`${duplicates} (vehicle, seq) pairs are stored more than once`);
    if (historyCount !== acked) problems.push(`history counts ${historyCount} points, the vehicles were told ${acked} are acked`);
    if (stored !== acked) problems.push(`PostgreSQL holds ${stored} rows for ${acked} acked points`);
    if (trackerBehind.length > 0)
      problems.push(
        `the tracker is not at the newest acked point of ${trackerBehind.length} vehicles (${trackerBehind.slice(0, 3).join(", ")})`,
      );
    return { acked, stored, lost, duplicates, trackerBehind, historyCount, problems, waitedMs: Date.now() - started };
  }

  /** Vehicles whose tracker state (asked of any tracker that answers) is not at their durable seq. */
  async function trackerCheck(): Promise<string[]> {
    const behind: string[] = [];
    const trackers = cluster.trackers.filter((t) => t.proc.child.exitCode === null && t.proc.child.signalCode === null);
    const client = createClient(TrackerService, createGrpcTransport({ baseUrl: trackers[0]!.proc.url }));
    for (const t of tallies) {
      if (t.durableSeq === 0) continue;
      let seq = 0;
      try {
        const res = await client.getVehicle(
          { vehicleId: t.vehicleId },
          { headers: { authorization: `Bearer ${token}` }, timeoutMs: 5_000 },
        );
        seq = Number(res.vehicle?.position?.seq ?? 0);
      } catch (err) {
        // A vehicle the tracker never saw is behind, not a failed check.
        if (ConnectError.from(err).code !== Code.NotFound) throw err;
      }
      if (seq !== t.durableSeq) behind.push(`${t.vehicleId}: tracker ${seq}, acked ${t.durableSeq}`);
    }
    return behind;
  }
}
