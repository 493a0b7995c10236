/**
 * Vehicle → gateway → JetStream → history → PostgreSQL, with the real gateway (its hand encoder) and
 * the history writer (its hand decoder): what a vehicle was told is durable is in PostgreSQL once,
 * with the fleet the gateway stamped from the token.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { loadConfig } from "../lib/config";
import { createLogger } from "../lib/log";
import { connectPostgres, type Sql } from "../lib/storage";
import { testStack } from "../dev";
import { grpcClient, point, startTestGateway, uploadPoints, type TestGateway } from "../gateway/test/helpers";
import { createHistory, type History } from "../history/history";

let gw: TestGateway;
let history: History;
let sql: Sql;

beforeAll(async () => {
  gw = await startTestGateway();
  const stack = await testStack(["nats", "postgres"]);
  const schema = `e2e_${process.pid}_${Date.now().toString(36)}`;
  history = await createHistory({
    config: loadConfig({
      ...stack.env(),
      HISTORY_DB_SCHEMA: schema,
      HISTORY_PORT: "0",
      LOG_LEVEL: "error",
      ARCHIVE_DIR: stack.dir,
      FLEET_STREAM_MAX_BYTES: String(64 * 1024 * 1024),
    }),
    log: createLogger({ level: "error" }),
    stream: gw.stream,
    subjectPrefix: `${gw.stream}.pos.`,
  });
  sql = connectPostgres({ url: stack.databaseUrl, schema, max: 1 });
}, 30_000);
afterAll(async () => {
  await history?.close();
  await gw?.gateway.close();
  await sql?.end({ timeout: 1 });
}, 30_000);

test("end to end - acked points land in PostgreSQL once, with the token's fleet", async () => {
  const client = grpcClient(gw.target);
  const token = await gw.token("e2e-1", "fleet-north");
  const points = Array.from({ length: 50 }, (_, i) =>
    point("e2e-1", i + 1, {
      recordedAt: { seconds: BigInt(Math.floor(Date.now() / 1000) - 100 + i), nanos: 250_000 } as never,
      orderId: i % 2 ? "o-1" : "",
    }),
  );
  const first = await uploadPoints(client, token, points);
  expect(first.response?.ack?.durableSeq).toBe(50);
  // The vehicle re-sends the last 10 (as after a lost ack): refused as duplicates by the gateway.
  await uploadPoints(client, token, points.slice(40));
  const deadline = Date.now() + 15_000;
  let rows: Record<string, unknown>[] = [];
  while (Date.now() < deadline) {
    rows =
      await sql`SELECT seq, fleet_id, order_id, received_at IS NOT NULL AS has_received, extract(microseconds FROM recorded_at)::int % 1000000 AS us
                     FROM positions WHERE vehicle_id = 'e2e-1' ORDER BY seq`;
    if (rows.length >= 50) break;
    await Bun.sleep(50);
  }
  expect(rows.map((r) => Number(r.seq))).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
  expect(new Set(rows.map((r) => r.fleet_id))).toEqual(new Set(["fleet-north"]));
  expect(rows.every((r) => r.has_received)).toBe(true);
  expect(rows[1]!.order_id).toBe("o-1");
  expect(Number(rows[0]!.us) % 1000).toBe(250); // sub-millisecond time kept (250 µs)
  client.close();
}, 30_000);
