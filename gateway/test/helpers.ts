/**
 * Shared setup of the gateway tests: a gateway on the test stack's NATS with its own stream (tests
 * isolate by names), tokens, an independent gRPC client (@grpc/grpc-js with protobuf-es
 * serializers) and a reader of what landed in JetStream.
 */
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { create, fromBinary, toBinary, type DescMessage, type MessageShape, type MessageInitShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import {
  PublishRequestSchema,
  PublishResponseSchema,
  ResumeRequestSchema,
  ResumeResponseSchema,
  SyncRequestSchema,
  SyncResponseSchema,
  UploadRequestSchema,
  UploadResponseSchema,
} from "../../gen/fleet/v1/ingest_pb";
import { PositionBatchSchema, PositionSchema, type Position } from "../../gen/fleet/v1/position_pb";
import { mintVehicleToken, tokenKeys } from "../../lib/auth";
import { loadConfig, type Config } from "../../lib/config";
import { createLogger } from "../../lib/log";
import { natsServers } from "../../lib/nats";
import { testStack } from "../../dev";
import { createGateway, type Gateway, type GatewayOptions } from "../gateway";

export const SECRET = "gateway-test-secret";

let counter = 0;
/** A name unique in this test process, usable as a stream name and a subject token. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${process.pid}_${Date.now().toString(36)}_${++counter}`;
}

export interface TestGateway {
  gateway: Gateway;
  config: Config;
  stream: string;
  natsUrl: string;
  /**
   * host:port for grpc-js: the main port, or the vehicle port (GATEWAY_VEHICLE_PORT, lib/h2) when
   * the test process runs with GATEWAY_TEST_LISTENER=vehicle (gateway/test/vehicle-port-*.test.ts
   * run other files' grpc-js cases that way).
   */
  target: string;
  /** host:port of the main port, whichever `target` is. */
  mainTarget: string;
  token(vehicleId: string, fleetId?: string): Promise<string>;
  /** Every point stored in this gateway's stream, in stream order. */
  stored(): Promise<Position[]>;
}

/** Starts a gateway on the test stack with its own stream; `env` overrides config variables. */
export async function startTestGateway(env: Record<string, string> = {}, options: Partial<GatewayOptions> = {}): Promise<TestGateway> {
  const stack = await testStack(["nats"]);
  const config = loadConfig({
    FLEET_JWT_SECRET: SECRET,
    GATEWAY_PORT: "0",
    NATS_URL: stack.natsUrl,
    LOG_LEVEL: "error",
    GATEWAY_BATCH_DELAY: "2ms",
    // Tests make their points in loops, microseconds apart of recorded time: floods by the vehicle's
    // own clock. The flood check has its own tests (test/backlog.test.ts), with the default back.
    GATEWAY_MAX_FIX_RATE: "0",
    // Each test gateway has its own stream on the one test NATS, which reserves its max_bytes.
    FLEET_STREAM_MAX_BYTES: String(64 * 1024 * 1024),
    ...(process.env.GATEWAY_TEST_LISTENER === "vehicle" ? { GATEWAY_VEHICLE_PORT: "0" } : {}),
    ...env,
  });
  const stream = uniqueName("GW");
  const gateway = await createGateway({
    config,
    stream,
    subjectPrefix: `${stream}.pos.`,
    log: createLogger({ level: (process.env.TEST_LOG_LEVEL as "debug") ?? "error", fields: { service: "gateway" } }),
    publishTimeoutMs: 500,
    publishAttempts: 2,
    ...options,
  });
  return {
    gateway,
    config,
    stream,
    natsUrl: stack.natsUrl,
    target: (process.env.GATEWAY_TEST_LISTENER === "vehicle" && gateway.vehicleUrl ? gateway.vehicleUrl : gateway.url).replace(
      /^https?:\/\//,
      "",
    ),
    mainTarget: gateway.url.replace(/^https?:\/\//, ""),
    token: (vehicleId, fleetId = "fleet-a") => mintVehicleToken(tokenKeys(config), vehicleId, { fleetId }),
    stored: () => storedPoints(stack.natsUrl, stream),
  };
}

/** Reads every message of a stream back and decodes the batches. */
export async function storedPoints(natsUrl: string, stream: string): Promise<Position[]> {
  const nc = await connect({ servers: natsServers(natsUrl) });
  try {
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(stream);
    const out: Position[] = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
      if (m) out.push(...fromBinary(PositionBatchSchema, m.data).positions);
    }
    return out;
  } finally {
    await nc.close();
  }
}

/**
 * A valid point of a vehicle; `over` changes fields. Recorded 5 to 60 s ago, `seq` ms apart (the
 * gateway takes one fix per vehicle and millisecond, and tests make points faster than that).
 */
export function point(vehicleId: string, seq: number, over: Partial<MessageInitShape<typeof PositionSchema>> = {}): Position {
  return create(PositionSchema, <MessageInitShape<typeof PositionSchema>>{
    vehicleId,
    seq,
    recordedAt: timestampFromMs(Date.now() - 60_000 + (seq % 55_000)),
    lat: 52.52 + seq * 1e-5,
    lon: 13.405,
    speed: 10,
    heading: 90,
    accuracy: 5,
    ...over,
  });
}

// ---- grpc-js client: an implementation independent of connect-es ----

function method<I extends DescMessage, O extends DescMessage>(
  name: string,
  input: I,
  output: O,
  requestStream: boolean,
  responseStream: boolean,
) {
  return {
    path: `/fleet.v1.IngestService/${name}`,
    requestStream,
    responseStream,
    requestSerialize: (m: MessageShape<I>) => Buffer.from(toBinary(input, m)),
    requestDeserialize: (b: Buffer) => fromBinary(input, b),
    responseSerialize: (m: MessageShape<O>) => Buffer.from(toBinary(output, m)),
    responseDeserialize: (b: Buffer) => fromBinary(output, b),
  };
}

const definition = {
  upload: method("Upload", UploadRequestSchema, UploadResponseSchema, true, false),
  sync: method("Sync", SyncRequestSchema, SyncResponseSchema, true, true),
  publish: method("Publish", PublishRequestSchema, PublishResponseSchema, false, false),
  resume: method("Resume", ResumeRequestSchema, ResumeResponseSchema, false, false),
};

/** Raw bytes in, raw bytes out: to send what no serializer would produce. */
const raw = (name: string, requestStream: boolean) => ({
  path: `/fleet.v1.IngestService/${name}`,
  requestStream,
  responseStream: false,
  requestSerialize: (b: Buffer) => b,
  requestDeserialize: (b: Buffer) => b,
  responseSerialize: (b: Buffer) => b,
  responseDeserialize: (b: Buffer) => b,
});

export const IngestClient = grpc.makeGenericClientConstructor(definition, "IngestService");
const RawClient = grpc.makeGenericClientConstructor({ upload: raw("Upload", true), publish: raw("Publish", false) }, "IngestService");

export interface GrpcResult<T> {
  response?: T;
  error?: grpc.ServiceError;
}

/**
 * A grpc-js client. `own: true` gives it its own connection (grpc-js shares connections between
 * clients of the same target by default): a Bun-hosted grpc-js client stalls its whole HTTP/2
 * connection after the server refused an oversized message (see the report; Node's grpc-js
 * against the same server does not), so such cases must not share the connection of others.
 */
export function grpcClient(target: string, { own = false } = {}): grpc.Client {
  return new IngestClient(target, grpc.credentials.createInsecure(), own ? { "grpc.use_local_subchannel_pool": 1 } : {});
}

export function rawGrpcClient(target: string): grpc.Client {
  return new RawClient(target, grpc.credentials.createInsecure());
}

export function bearer(token: string | undefined): grpc.Metadata {
  const md = new grpc.Metadata();
  if (token !== undefined) md.set("authorization", `Bearer ${token}`);
  return md;
}

type ClientStreamFn = (md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: unknown) => void) => grpc.ClientWritableStream<unknown>;

/** Runs a client-streaming call with grpc-js: writes every message, half-closes, returns response or error. */
export function grpcUpload<T>(client: grpc.Client, md: grpc.Metadata, messages: unknown[], name = "upload"): Promise<GrpcResult<T>> {
  return new Promise((resolve) => {
    const fn = (client as unknown as Record<string, ClientStreamFn>)[name]!.bind(client);
    const call = fn(md, (err, res) => resolve(err ? { error: err } : { response: res as T }));
    for (const m of messages) call.write(m);
    call.end();
  });
}

/** Upload of positions through grpc-js. */
export function uploadPoints(client: grpc.Client, token: string | undefined, points: Position[]) {
  return grpcUpload<MessageShape<typeof UploadResponseSchema>>(
    client,
    bearer(token),
    points.map((position) => create(UploadRequestSchema, { position })),
  );
}

/** Unary call through grpc-js. */
export function grpcUnary<T>(client: grpc.Client, name: string, md: grpc.Metadata, message: unknown): Promise<GrpcResult<T>> {
  return new Promise((resolve) => {
    const fn = (
      client as unknown as Record<
        string,
        (m: unknown, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void
      >
    )[name]!.bind(client);
    fn(message, md, (err, res) => resolve(err ? { error: err } : { response: res as T }));
  });
}

export { grpc };
