/**
 * Ceiling of the gateway's durable path: the same points published straight to JetStream by
 * one client, one message per point with a message id (dedup on, as the gateway's stream has),
 * async publishes with a bounded window, into a file-storage stream shaped like FLEET_POSITIONS.
 */
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { partitionOf } from "../lib/nats";
import { encodePosition, vehicleTemplate, type VehicleTemplate } from "./point-codec";

export interface JetStreamCeilingOptions {
  natsUrl: string;
  /** Vehicles the points are spread over (round-robin), as in the gateway phase. */
  vehicles?: number;
  /** Publishes not yet acked at most. */
  window?: number;
  warmupMs?: number;
  durationMs?: number;
  partitions?: number;
  /** num_replicas of the ceiling's stream (3 on a 3-node cluster: every publish waits for a quorum). */
  replicas?: number;
  progress?: (line: string) => void;
}

export interface CeilingResult {
  pointsPerSecond: number;
  acked: number;
  seconds: number;
  bytesPerPoint: number;
}

/** Publishes for `warmupMs + durationMs`, counts PubAcks during `durationMs`. */
export async function measureJetStreamCeiling({
  natsUrl,
  vehicles = 10_000,
  window = 4096,
  warmupMs = 1500,
  durationMs = 8000,
  partitions = 16,
  replicas = 1,
  progress = () => {},
}: JetStreamCeilingOptions): Promise<CeilingResult> {
  const nc = await connect({ servers: natsUrl });
  const stream = "BENCH_CEILING";
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(stream).catch(() => {});
    await jsm.streams.add({
      name: stream,
      subjects: ["bench.ceiling.>"],
      storage: StorageType.File,
      duplicate_window: 5 * 60 * 1_000_000_000,
      num_replicas: replicas,
    });
    const js = jetstream(nc);
    const templates: VehicleTemplate[] = [];
    const subjects: string[] = [];
    for (let i = 0; i < vehicles; i++) {
      const id = `ceiling-${i}`;
      templates.push(vehicleTemplate(id, 48.8 + (i % 1000) / 5000, 2.25 + (i % 997) / 5000));
      subjects.push(`bench.ceiling.${partitionOf(id, partitions)}`);
    }
    const seqs = new Uint32Array(vehicles);
    let acked = 0;
    let failed = 0;
    let inFlight = 0;
    let bytes = 0;
    let n = 0;
    let wake: (() => void) | null = null;
    const start = performance.now();
    const stopAt = start + warmupMs + durationMs;
    let a0 = 0;
    let t0 = 0;
    let lastReport = start;
    let lastAcked = 0;
    const done = () => {
      inFlight--;
      if (wake && inFlight < window) {
        const w = wake;
        wake = null;
        w();
      }
    };
    while (true) {
      const t = performance.now();
      if (t >= stopAt) break;
      if (t0 === 0 && t - start >= warmupMs) {
        t0 = t;
        a0 = acked;
      }
      if (t - lastReport >= 1000) {
        progress(`  jetstream: ${Math.round(((acked - lastAcked) * 1000) / (t - lastReport)).toLocaleString("en-US")} acked/s`);
        lastReport = t;
        lastAcked = acked;
      }
      // Publish a slice, then yield so acks are processed.
      for (let k = 0; k < 256 && inFlight < window; k++) {
        const v = n++ % vehicles;
        const seq = ++seqs[v]!;
        const data = encodePosition(templates[v]!, seq, Date.now());
        bytes += data.length;
        inFlight++;
        js.publish(subjects[v]!, data, { msgID: `ceiling-${v}-${seq}` }).then(
          () => {
            acked++;
            done();
          },
          () => {
            failed++;
            done();
          },
        );
      }
      if (inFlight >= window) await new Promise<void>((r) => (wake = r));
      else await Promise.resolve();
    }
    const seconds = (performance.now() - t0) / 1000;
    const measured = acked - a0;
    while (inFlight > 0) await new Promise<void>((r) => (wake = r));
    if (failed > 0) progress(`  jetstream: ${failed} publishes failed`);
    await jsm.streams.delete(stream).catch(() => {});
    return { pointsPerSecond: measured / seconds, acked: measured, seconds, bytesPerPoint: bytes / n };
  } finally {
    await nc.close();
  }
}
