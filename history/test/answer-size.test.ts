/**
 * Answers fit their own limits: GetTrack's budget is what the caller wants at most, the message
 * limit (GATEWAY_MAX_MESSAGE_BYTES, 256 KiB) is what it can be sent, in the encoding it reads;
 * Replay's messages stay under the limit in points and bytes however many points are due at once.
 * Over gRPC (a Connect client) and over Connect JSON (plain fetch, as curl would send it).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { HistoryService } from "../../gen/fleet/v1/history_pb";
import type { History } from "../history";
import { REPLAY_MESSAGE_POINTS } from "../history-service";
import { bearer, countRows, eventually, historyFixture, pointAt, type HistoryFixture } from "./helpers";

let fx: HistoryFixture;
let history: History;
let client: Client<typeof HistoryService>;
let token: string;

const LIMIT = 256 * 1024;
const T0 = Date.UTC(2026, 10, 21, 6, 0, 0);
const ts = timestampFromMs;
const TRACK = 10_000;
const CROWD = 3_500;

beforeAll(async () => {
  fx = await historyFixture({ HISTORY_TRACK_MAX_RANGE: "1d" });
  history = await fx.start();
  client = fx.client(history);
  token = await fx.token({ all: true });
  // A track of 10,000 points (HISTORY_TRACK_MAX_POINTS), each a little off the line so none is redundant.
  const track = Array.from({ length: TRACK }, (_, i) =>
    pointAt("long-1", T0 + i * 1000, i + 1, { lat: 52.5 + i * 1e-5, lon: 13.4 + (i % 2) * 1e-4, orderId: "ORD-1" }),
  );
  for (let i = 0; i < track.length; i += 1000) await fx.publish(track.slice(i, i + 1000));
  // 3,500 vehicles at one instant in one square: one Replay group of ~300 KB.
  const crowd = Array.from({ length: CROWD }, (_, i) =>
    pointAt(`crowd-${i}`, T0 + 3600_000, 1, { lat: 48.1 + (i % 60) * 1e-4, lon: 11.5 + Math.floor(i / 60) * 1e-4 }),
  );
  for (let i = 0; i < crowd.length; i += 1000) await fx.publish(crowd.slice(i, i + 1000));
  await eventually(async () => (await countRows(fx.sql)) === TRACK + CROWD, "every row");
}, 60_000);
afterAll(async () => {
  await fx?.close();
}, 30_000);

test("answer size - GetTrack of 10,000 points over gRPC: as many as fit the message limit, first and last kept", async () => {
  const r = await client.getTrack({ vehicleId: "long-1", from: ts(T0), to: ts(T0 + TRACK * 1000), maxPoints: TRACK }, bearer(token));
  expect(r.totalPoints).toBe(BigInt(TRACK));
  expect(toBinary(HistoryService.method.getTrack.output, r).length).toBeLessThanOrEqual(LIMIT);
  // Not starved: close to what 256 KiB holds (~90 bytes a point).
  expect(r.points.length).toBeGreaterThan(2_500);
  expect(r.points.length).toBeLessThan(TRACK);
  expect([r.points[0]!.seq, r.points.at(-1)!.seq]).toEqual([1, TRACK]);
  // A budget that fits is kept as asked.
  const small = await client.getTrack({ vehicleId: "long-1", from: ts(T0), to: ts(T0 + TRACK * 1000), maxPoints: 500 }, bearer(token));
  expect(small.points.length).toBe(500);
});

test("answer size - GetTrack of 10,000 points over Connect JSON: HTTP 200 under the limit", async () => {
  const res = await fetch(`${history.url}/fleet.v1.HistoryService/GetTrack`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({
      vehicleId: "long-1",
      from: new Date(T0).toISOString(),
      to: new Date(T0 + TRACK * 1000).toISOString(),
      maxPoints: TRACK,
    }),
  });
  const body = Buffer.from(await res.arrayBuffer());
  expect(res.status).toBe(200);
  expect(body.length).toBeLessThanOrEqual(LIMIT);
  const json = JSON.parse(body.toString()) as { points: { seq: number }[]; totalPoints: string };
  expect(json.totalPoints).toBe(String(TRACK));
  expect(json.points.length).toBeGreaterThan(900);
  expect([json.points[0]!.seq, json.points.at(-1)!.seq]).toEqual([1, TRACK]);
});

test("answer size - a Replay group of 3,500 points due at once comes in messages under the limit, every point once", async () => {
  const area = { shape: { case: "box" as const, value: { minLat: 48.09, maxLat: 48.11, minLon: 11.49, maxLon: 11.51 } } };
  const seen = new Set<string>();
  let messages = 0;
  for await (const m of client.replay(
    { target: { case: "area", value: area }, from: ts(T0 + 3600_000 - 1000), to: ts(T0 + 3600_000 + 1000), speed: 1 },
    bearer(token),
  )) {
    messages++;
    expect(m.positions.length).toBeLessThanOrEqual(REPLAY_MESSAGE_POINTS);
    expect(toBinary(HistoryService.method.replay.output, m).length).toBeLessThanOrEqual(LIMIT);
    for (const p of m.positions) seen.add(p.vehicleId);
  }
  expect(seen.size).toBe(CROWD);
  expect(messages).toBeGreaterThanOrEqual(4);
});

test("answer size - the same Replay over Connect JSON streaming: every message under the limit", async () => {
  const res = await fetch(`${history.url}/fleet.v1.HistoryService/Replay`, {
    method: "POST",
    headers: { "content-type": "application/connect+json", authorization: `Bearer ${token}` },
    body: envelope(
      JSON.stringify({
        area: { box: { minLat: 48.09, maxLat: 48.11, minLon: 11.49, maxLon: 11.51 } },
        from: new Date(T0 + 3600_000 - 1000).toISOString(),
        to: new Date(T0 + 3600_000 + 1000).toISOString(),
        speed: 1,
      }),
    ),
  });
  expect(res.status).toBe(200);
  const body = Buffer.from(await res.arrayBuffer());
  let points = 0;
  let end: { error?: { code: string; message: string } } | undefined;
  for (let o = 0; o < body.length; ) {
    const flags = body[o]!;
    const len = body.readUInt32BE(o + 1);
    const payload = body.subarray(o + 5, o + 5 + len);
    o += 5 + len;
    if (flags & 2) {
      end = JSON.parse(payload.toString());
      continue;
    }
    expect(len).toBeLessThanOrEqual(LIMIT);
    points += (JSON.parse(payload.toString()) as { positions: unknown[] }).positions.length;
  }
  expect(end?.error).toBeUndefined();
  expect(points).toBe(CROWD);
});

/** One Connect streaming envelope: flags 0, big-endian length, the bytes. */
function envelope(json: string): Uint8Array<ArrayBuffer> {
  const payload = new TextEncoder().encode(json);
  const out = new Uint8Array(5 + payload.length);
  new DataView(out.buffer).setUint32(1, payload.length);
  out.set(payload, 5);
  return out;
}
