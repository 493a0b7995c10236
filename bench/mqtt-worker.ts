/**
 * MQTT load child of `bench ingest`: `bun bench/mqtt-worker.ts <json options>` publishes the
 * same points as the gateway phase with QoS 1 (one point per message) over its connections,
 * each with a bounded window of unacked publishes, and prints one JSON line with the PUBACKs
 * counted during the measured window.
 */
import mqtt from "mqtt";
import { partitionOf } from "../lib/nats";
import { encodePosition, vehicleTemplate, type VehicleTemplate } from "./point-codec";

export interface MqttWorkerOptions {
  url: string;
  connections: number;
  /** Unacked publishes per connection at most. */
  window: number;
  vehicles: number;
  /** First vehicle index of this worker. */
  first: number;
  warmupMs: number;
  durationMs: number;
}

/** Result line of one worker. */
export interface MqttWorkerResult {
  acked: number;
  seconds: number;
  failed: number;
}

async function run(o: MqttWorkerOptions): Promise<MqttWorkerResult> {
  const templates: VehicleTemplate[] = [];
  const topics: string[] = [];
  for (let i = 0; i < o.vehicles; i++) {
    const id = `mqtt-${o.first + i}`;
    templates.push(vehicleTemplate(id, 48.8 + (i % 1000) / 5000, 2.25 + (i % 997) / 5000));
    topics.push(`fleet/pos/${partitionOf(id, 16)}`);
  }
  const seqs = new Uint32Array(o.vehicles);
  const clients = await Promise.all(
    Array.from({ length: o.connections }, () =>
      mqtt.connectAsync(o.url, { clean: true, reconnectPeriod: 0, keepalive: 60, protocolVersion: 4 }),
    ),
  );
  let acked = 0;
  let failed = 0;
  let running = true;
  let next = 0;
  // Each connection keeps `window` publishes outstanding; a PUBACK sends the next point.
  const pump = (client: mqtt.MqttClient) => {
    const one = () => {
      if (!running) return;
      const v = next++ % o.vehicles;
      const seq = ++seqs[v]!;
      client.publish(topics[v]!, Buffer.from(encodePosition(templates[v]!, seq, Date.now())), { qos: 1 }, (err) => {
        if (err) failed++;
        else acked++;
        one();
      });
    };
    for (let i = 0; i < o.window; i++) one();
  };
  for (const c of clients) pump(c);
  await Bun.sleep(o.warmupMs);
  const a0 = acked;
  const t0 = performance.now();
  await Bun.sleep(o.durationMs);
  const result = { acked: acked - a0, seconds: (performance.now() - t0) / 1000, failed };
  running = false;
  await Promise.all(clients.map((c) => c.endAsync(true).catch(() => {})));
  return result;
}

if (import.meta.main) {
  const options = JSON.parse(process.argv[2] ?? "{}") as MqttWorkerOptions;
  const result = await run(options);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}
