/**
 * Shared setup of the history tests: the test stack's NATS and PostgreSQL, a stream and a schema of
 * the test's own (tests isolate by names), a history service in-process, a publisher of
 * PositionBatch messages shaped as the gateway's, and a Connect client over gRPC.
 */
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { HistoryService } from "../../gen/fleet/v1/history_pb";
import { PositionBatchSchema, PositionSchema, type Position } from "../../gen/fleet/v1/position_pb";
import { mintWatchToken, tokenKeys, type WatchGrant } from "../../lib/auth";
import { loadConfig, type Config } from "../../lib/config";
import { connectNats, ensurePositionsStream, HEADERS, type Nats } from "../../lib/nats";
import { createLogger } from "../../lib/log";
import { connectPostgres, guardPostgresClosedSocketWrite, migrate, type Sql } from "../../lib/storage";
import { testStack, type Stack } from "../../dev";
import { createHistory, type History } from "../history";
import { createPositionWriter, type PositionWriter } from "../write-positions";

export const SECRET = "history-test-secret";
/** The test streams' size: each reserves it in the shared nats-server, whose storage is not 10 GiB a stream. */
export const TEST_STREAM_MAX_BYTES = 64 * 1024 * 1024;

let counter = 0;
/** A lowercase name unique in this test process (schema, stream, prefix). */
export function uniqueName(prefix: string): string {
  return `${prefix}_${process.pid}_${Date.now().toString(36)}_${++counter}`.toLowerCase();
}

export interface HistoryFixture {
  stack: Stack;
  config: Config;
  schema: string;
  stream: string;
  subjectPrefix: string;
  nats: Nats;
  /** A pool on the test's schema, for assertions. */
  sql: Sql;
  start(extra?: Record<string, string>): Promise<History>;
  /** Publishes one batch as the gateway does (message id given: JetStream dedups within its window). */
  publish(points: Position[], msgID?: string): Promise<void>;
  client(h: History): Client<typeof HistoryService>;
  token(grant: WatchGrant): Promise<string>;
  close(): Promise<void>;
}

/** Config over the test stack; `env` adds or overrides variables. */
export function testConfig(stack: Stack, schema: string, env: Record<string, string> = {}): Config {
  return loadConfig({
    ...stack.env(),
    FLEET_JWT_SECRET: SECRET,
    HISTORY_PORT: "0",
    ARCHIVER_PORT: "0",
    HISTORY_DB_SCHEMA: schema,
    ARCHIVE_PREFIX: `${schema}/`,
    LOG_LEVEL: "error",
    FLEET_STREAM_MAX_BYTES: String(TEST_STREAM_MAX_BYTES),
    ...env,
  });
}

export async function historyFixture(env: Record<string, string> = {}): Promise<HistoryFixture> {
  // As history/main.ts does: a PostgreSQL restart can trip postgres.js's write to a closed socket.
  guardPostgresClosedSocketWrite(() => {});
  const stack = await testStack(["nats", "postgres", "s3"]);
  const schema = uniqueName("h");
  const stream = uniqueName("HS").toUpperCase();
  const subjectPrefix = `${stream}.pos.`;
  const config = testConfig(stack, schema, env);
  const log = createLogger({ level: "error" });
  const nats = await connectNats({ url: stack.natsUrl, name: "history-test", log });
  await ensurePositionsStream(nats.jsm, {
    duplicateWindow: 60_000,
    streamMaxAge: 3_600_000,
    streamMaxBytes: TEST_STREAM_MAX_BYTES,
    stream,
    subjects: `${subjectPrefix}>`,
  });
  const sql = connectPostgres({ url: stack.databaseUrl, schema, max: 2 });
  const started: History[] = [];
  let n = 0;
  return {
    stack,
    config,
    schema,
    stream,
    subjectPrefix,
    nats,
    sql,
    async start(extra = {}) {
      const h = await createHistory({
        config: testConfig(stack, schema, { ...env, ...extra }),
        log: createLogger({ level: (process.env.TEST_LOG_LEVEL as "debug") ?? "error", fields: { service: "history" } }),
        stream,
        subjectPrefix,
      });
      started.push(h);
      return h;
    },
    async publish(points, msgID = `${stream}-${++n}`) {
      const h = natsHeaders();
      h.set(HEADERS.count, String(points.length));
      await nats.js.publish(`${subjectPrefix}0`, toBinary(PositionBatchSchema, create(PositionBatchSchema, { positions: points })), {
        msgID,
        headers: h,
      });
    },
    client(h) {
      return createClient(HistoryService, createGrpcTransport({ baseUrl: h.url }));
    },
    token: (grant) => mintWatchToken(tokenKeys(config), grant),
    async close() {
      await Promise.all(started.map((h) => h.close().catch(() => {})));
      await nats.close();
      await sql.end({ timeout: 1 });
    },
  };
}

/** A point of a vehicle at a time (ms); `over` changes fields. */
export function pointAt(vehicleId: string, ms: number, seq: number, over: Partial<MessageInitShape<typeof PositionSchema>> = {}): Position {
  return create(PositionSchema, <MessageInitShape<typeof PositionSchema>>{
    vehicleId,
    seq,
    recordedAt: timestampFromMs(ms),
    lat: 52.52 + seq * 1e-4,
    lon: 13.405,
    speed: 10,
    heading: 0,
    accuracy: 5,
    fleetId: "fleet-a",
    ...over,
  });
}

/** Waits until `check` returns true (polling), or fails with `what`. */
export async function eventually(check: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await Bun.sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Rows in positions of the fixture's schema. */
export async function countRows(sql: Sql, vehicleLike = "%"): Promise<number> {
  const [r] = await sql`SELECT count(*)::int AS n FROM positions WHERE vehicle_id LIKE ${vehicleLike}`;
  return r!.n as number;
}

export const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

/**
 * A position writer on the fixture's schema (migrated first, plain partitions), with connections of
 * its own named `applicationName`: what a test's own history consumer writes with.
 */
export async function fixtureWriter(fx: HistoryFixture, applicationName: string, deadlineMs = 30_000): Promise<PositionWriter> {
  const mode = await migrate(fx.sql, { schema: fx.schema, log: createLogger({ level: "error" }), timescale: "off" });
  return createPositionWriter({
    connect: () => connectPostgres({ url: fx.stack.databaseUrl, schema: fx.schema, max: 2, applicationName }),
    deadlineMs,
    mode,
    schema: fx.schema,
  });
}
