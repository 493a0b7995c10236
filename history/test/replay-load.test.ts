/**
 * Readers never starve the writer: slow Replays (speed 1, a client that reads nothing more) hold no
 * PostgreSQL connection while they pace, readers and the writer have pools of their own, and the
 * number of Replays open at once is capped per token and in total.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { HistoryService, ReplayResponse } from "../../gen/fleet/v1/history_pb";
import type { History } from "../history";
import { bearer, countRows, eventually, historyFixture, pointAt, type HistoryFixture } from "./helpers";

let fx: HistoryFixture;
let history: History;
let client: Client<typeof HistoryService>;

const T0 = Date.UTC(2026, 10, 20, 8, 0, 0);
const ts = timestampFromMs;
const POINTS = 3000;

beforeAll(async () => {
  fx = await historyFixture({
    HISTORY_REPLAYS_MAX: "20",
    HISTORY_REPLAYS_PER_TOKEN: "10",
    HISTORY_READ_CONNECTIONS: "3",
    HISTORY_WRITE_CONNECTIONS: "3",
  });
  history = await fx.start();
  client = fx.client(history);
  // 50 minutes at one point a second: more than a page, so a reader that keeps a cursor open while
  // it paces holds its connection for the whole replay.
  const pts = Array.from({ length: POINTS }, (_, i) => pointAt("slow-1", T0 + i * 1000, i + 1));
  for (let i = 0; i < pts.length; i += 1000) await fx.publish(pts.slice(i, i + 1000));
  await eventually(async () => (await countRows(fx.sql, "slow-1")) === POINTS, "the replayed vehicle's rows");
}, 60_000);
afterAll(async () => {
  await fx?.close();
}, 30_000);

interface OpenReplay {
  first: ReplayResponse;
  stop(): void;
}

/** Opens a Replay at speed 1 and reads its first message only, then leaves it open and paced. */
async function openReplay(token: string): Promise<OpenReplay> {
  const abort = new AbortController();
  const it = client
    .replay(
      { target: { case: "vehicleId", value: "slow-1" }, from: ts(T0), to: ts(T0 + POINTS * 1000), speed: 1 },
      { ...bearer(token), signal: abort.signal },
    )
    [Symbol.asyncIterator]();
  const r = await it.next();
  if (r.done) throw new Error("replay ended before its first message");
  return { first: r.value, stop: () => abort.abort() };
}

const failure = async (p: Promise<unknown>) => {
  const err = await p.then(
    () => undefined,
    (e) => ConnectError.from(e),
  );
  return err ? { code: err.code, message: err.rawMessage } : undefined;
};

test("replay load - 20 slow replays open: the writer's rows stay visible at once, queries answer, the 21st is refused", async () => {
  const a = await fx.token({ all: true, subject: "a" });
  const b = await fx.token({ all: true, subject: "b" });
  const open: OpenReplay[] = [];
  try {
    for (let i = 0; i < 20; i++) open.push(await openReplay(i < 10 ? a : b));
    expect(open.every((r) => r.first.positions[0]?.seq === 1)).toBe(true);

    // A point sent while they pace is written as usual (the writer waits for no reader).
    const sent = Date.now();
    await fx.publish([pointAt("writer-1", T0, 1)]);
    await eventually(async () => (await countRows(fx.sql, "writer-1")) === 1, "a point written during 20 replays", 5_000);
    expect(Date.now() - sent).toBeLessThan(5_000);
    // And a query of the reader pool answers.
    const track = await client.getTrack(
      { vehicleId: "slow-1", from: ts(T0), to: ts(T0 + 600_000), maxPoints: 10 },
      { ...bearer(a), timeoutMs: 5_000 },
    );
    expect(track.totalPoints).toBe(600n);

    // Past the cap: per token, then in total.
    const perToken = await failure(openReplay(a));
    expect(perToken?.code).toBe(Code.ResourceExhausted);
    expect(perToken?.message).toContain("HISTORY_REPLAYS_PER_TOKEN");
    expect(perToken?.message).toContain("10");
    const c = await fx.token({ all: true, subject: "c" });
    const total = await failure(openReplay(c));
    expect(total?.code).toBe(Code.ResourceExhausted);
    expect(total?.message).toContain("HISTORY_REPLAYS_MAX");
    expect(total?.message).toContain("20");

    // A replay that ends gives its place back.
    open.shift()!.stop();
    await eventually(
      async () => {
        const r = await openReplay(c);
        open.push(r);
        return true;
      },
      "a place freed by a cancelled replay",
      5_000,
    );
  } finally {
    for (const r of open) r.stop();
  }
}, 60_000);
