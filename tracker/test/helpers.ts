/**
 * Shared setup of the tracker tests: a tracker on the test stack's NATS and Redis with its own
 * stream and key prefix (tests isolate by names), a way to put batches on that stream as the
 * gateway does, tokens, and an independent gRPC client (@grpc/grpc-js with protobuf-es serializers).
 *
 * Live subjects are shared by every tracker on the one NATS: tests keep apart by unique vehicle
 * ids and fleets, and tokens that grant only their own fleet.
 */
import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { jetstream, type JetStreamClient } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { PositionBatchSchema, PositionSchema, type Position } from "../../gen/fleet/v1/position_pb";
import {
  CountByStatusRequestSchema,
  CountByStatusResponseSchema,
  GetVehicleRequestSchema,
  GetVehicleResponseSchema,
  NearbyRequestSchema,
  NearbyResponseSchema,
  SetStatusRequestSchema,
  SetStatusResponseSchema,
  WatchAreaRequestSchema,
  WatchAreaResponseSchema,
  WatchVehiclesRequestSchema,
  WatchVehiclesResponseSchema,
  type VehicleEvent,
} from "../../gen/fleet/v1/tracker_pb";
import { mintWatchToken, tokenKeys, type WatchGrant } from "../../lib/auth";
import { loadConfig, type Config } from "../../lib/config";
import { createLogger } from "../../lib/log";
import { testStack } from "../../dev";
import { createTracker, type Tracker, type TrackerOptions } from "../tracker";

export const SECRET = "tracker-test-secret";

let counter = 0;
/** A name unique in this test process, usable as a stream name, key prefix and subject token. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${process.pid}_${Date.now().toString(36)}_${++counter}`;
}

export interface TestTracker {
  tracker: Tracker;
  config: Config;
  stream: string;
  prefix: string;
  natsUrl: string;
  redisUrl: string;
  /** host:port for grpc-js. */
  target: string;
  nc: NatsConnection;
  js: JetStreamClient;
  /** Publishes one batch on the stream, as the gateway does. */
  publish(points: Position[]): Promise<void>;
  token(grant: WatchGrant): Promise<string>;
  close(): Promise<void>;
}

export async function startTestTracker(env: Record<string, string> = {}, options: Partial<TrackerOptions> = {}): Promise<TestTracker> {
  const stack = await testStack(["nats", "redis"]);
  const config = loadConfig({
    FLEET_JWT_SECRET: SECRET,
    TRACKER_PORT: "0",
    NATS_URL: stack.natsUrl,
    REDIS_URL: stack.redisUrl,
    LOG_LEVEL: "error",
    TRACKER_SWEEP_INTERVAL: "1h",
    // Each test tracker makes a stream of its own: JetStream reserves its max_bytes, and the default
    // 10 GiB of a few streams is more than the test server's disk has.
    FLEET_STREAM_MAX_BYTES: String(64 * 1024 * 1024),
    ...env,
  });
  const stream = uniqueName("TRK");
  const prefix = `${stream}:`;
  const tracker = await createTracker({
    config,
    stream,
    subjects: `${stream}.pos.>`,
    prefix,
    log: createLogger({ level: (process.env.TEST_LOG_LEVEL as "debug") ?? "error", fields: { service: "tracker" } }),
    ...options,
  });
  const nc = await connect({ servers: stack.natsUrl });
  const js = jetstream(nc);
  return {
    tracker,
    config,
    stream,
    prefix,
    natsUrl: stack.natsUrl,
    redisUrl: stack.redisUrl,
    target: tracker.url.replace(/^https?:\/\//, ""),
    nc,
    js,
    async publish(points) {
      await js.publish(`${stream}.pos.0`, toBinary(PositionBatchSchema, create(PositionBatchSchema, { positions: points })));
    },
    token: (grant) => mintWatchToken(tokenKeys(config), grant),
    async close() {
      await tracker.close();
      await nc.close();
    },
  };
}

let lastRecordedMs = 0;
/**
 * Now, but never the same millisecond twice in this process: the tracker keeps the first of two
 * fixes with one recorded time (newer-wins.lua), so points made one after another must differ.
 */
export function recordedNow(): number {
  lastRecordedMs = Math.max(Date.now(), lastRecordedMs + 1);
  return lastRecordedMs;
}

/** A point of a vehicle; `over` changes fields. recorded_at defaults to now (recordedNow). */
export function point(vehicleId: string, seq: number, over: Partial<MessageInitShape<typeof PositionSchema>> = {}): Position {
  return create(PositionSchema, <MessageInitShape<typeof PositionSchema>>{
    vehicleId,
    seq,
    recordedAt: timestampFromMs(recordedNow()),
    lat: 52.52,
    lon: 13.405,
    speed: 10,
    heading: 90,
    accuracy: 5,
    fleetId: "fleet-a",
    ...over,
  });
}

/** Polls `check` until it returns a value other than undefined, or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 5000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(20);
  }
}

// ---- grpc-js client: an implementation independent of connect-es ----

function method<I extends DescMessage, O extends DescMessage>(name: string, input: I, output: O, responseStream: boolean) {
  return {
    path: `/fleet.v1.TrackerService/${name}`,
    requestStream: false,
    responseStream,
    // Plain objects are welcome: create() fills defaults (and returns a message as it is).
    requestSerialize: (m: MessageInitShape<I>) => Buffer.from(toBinary(input, create(input, m))),
    requestDeserialize: (b: Buffer) => fromBinary(input, b),
    responseSerialize: (m: MessageShape<O>) => Buffer.from(toBinary(output, m)),
    responseDeserialize: (b: Buffer) => fromBinary(output, b),
  };
}

const definition = {
  getVehicle: method("GetVehicle", GetVehicleRequestSchema, GetVehicleResponseSchema, false),
  nearby: method("Nearby", NearbyRequestSchema, NearbyResponseSchema, false),
  countByStatus: method("CountByStatus", CountByStatusRequestSchema, CountByStatusResponseSchema, false),
  setStatus: method("SetStatus", SetStatusRequestSchema, SetStatusResponseSchema, false),
  watchVehicles: method("WatchVehicles", WatchVehiclesRequestSchema, WatchVehiclesResponseSchema, true),
  watchArea: method("WatchArea", WatchAreaRequestSchema, WatchAreaResponseSchema, true),
};

const TrackerClient = grpc.makeGenericClientConstructor(definition, "TrackerService");

/** `options` are grpc-js channel options (e.g. a subchannel pool of its own: a connection of its own). */
export function grpcClient(target: string, options: grpc.ChannelOptions = {}): grpc.Client {
  return new TrackerClient(target, grpc.credentials.createInsecure(), options);
}

export function bearer(token: string | undefined): grpc.Metadata {
  const md = new grpc.Metadata();
  if (token !== undefined) md.set("authorization", `Bearer ${token}`);
  return md;
}

export interface GrpcResult<T> {
  response?: T;
  error?: grpc.ServiceError;
}

type UnaryFn = (m: unknown, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;
type StreamFn = (m: unknown, md: grpc.Metadata) => grpc.ClientReadableStream<{ events: VehicleEvent[] }>;

/** A unary call through grpc-js. */
export function unary<T>(
  client: grpc.Client,
  name: keyof typeof definition,
  token: string | undefined,
  message: unknown,
): Promise<GrpcResult<T>> {
  return new Promise((resolve) => {
    const fn = (client as unknown as Record<string, UnaryFn>)[name]!.bind(client);
    fn(message, bearer(token), (err, res) => resolve(err ? { error: err } : { response: res as T }));
  });
}

/**
 * A server-streaming watch through grpc-js that collects events. `next(n)` waits for n more
 * events (or the end); `end` resolves with the final status.
 */
export interface WatchStream {
  events: VehicleEvent[];
  /** Resolves once `count` events in total arrived; rejects if the stream ended first. */
  until(count: number, timeoutMs?: number): Promise<VehicleEvent[]>;
  /** Resolves with the stream's error (or null when it ended OK). */
  ended: Promise<grpc.ServiceError | null>;
  cancel(): void;
  call: grpc.ClientReadableStream<{ events: VehicleEvent[] }>;
}

export function watch(client: grpc.Client, name: "watchVehicles" | "watchArea", token: string | undefined, message: unknown): WatchStream {
  const fn = (client as unknown as Record<string, StreamFn>)[name]!.bind(client);
  const call = fn(message, bearer(token));
  const events: VehicleEvent[] = [];
  let waiters: (() => void)[] = [];
  let done = false;
  const ended = new Promise<grpc.ServiceError | null>((resolve) => {
    call.on("data", (m: { events: VehicleEvent[] }) => {
      events.push(...m.events);
      const w = waiters;
      waiters = [];
      for (const f of w) f();
    });
    call.on("error", (err: grpc.ServiceError) => {
      done = true;
      resolve(err);
      for (const f of waiters) f();
    });
    call.on("end", () => {
      done = true;
      resolve(null);
      for (const f of waiters) f();
    });
  });
  return {
    events,
    ended,
    call,
    cancel: () => call.cancel(),
    async until(count, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (events.length < count) {
        if (done) throw new Error(`stream ended after ${events.length} of ${count} events`);
        const left = deadline - Date.now();
        if (left <= 0)
          throw new Error(
            `timed out with ${events.length} of ${count} events: ${JSON.stringify(events.map((e) => [e.kind, e.vehicle?.position?.vehicleId]))}`,
          );
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, left);
          waiters.push(() => {
            clearTimeout(t);
            resolve();
          });
        });
      }
      return events;
    },
  };
}

export { grpc };
