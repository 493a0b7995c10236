/**
 * newer-wins.lua answers what each vehicle was before a point; the store makes the new records
 * itself. Against a real Redis: those records are byte for byte what the script stored, for every
 * kind of change, and the counts and order index follow.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import Redis from "ioredis";
import { VehicleStatus, type Position } from "../../gen/fleet/v1/position_pb";
import { PointBlob } from "../point-blob";
import { decodeState } from "../state-codec";
import { bucketOf } from "../bucket";
import { createStore, type Store } from "../store";
import { startTestTracker, point, uniqueName, type TestTracker } from "./helpers";

let t: TestTracker;
let redis: Redis;
let store: Store;
let prefix: string;
beforeAll(async () => {
  t = await startTestTracker({ TRACKER_CONSUME: "false" });
  redis = new Redis(t.redisUrl);
  prefix = `${uniqueName("store")}:`;
  store = createStore({ redis, prefix });
});
afterAll(async () => {
  redis.disconnect();
  await t.close();
});

const apply = async (points: Position[]) => {
  const blob = new PointBlob(32);
  for (const p of points) blob.addPosition(p, Date.now());
  return store.applyBatch(blob, Date.now());
};
const stored = async (id: string) => (await redis.hgetBuffer(`${prefix}st:${bucketOf(id)}`, id))!;

describe("store", () => {
  test("apply - every new record is the one Redis stored: new, status and order kept, changed, twice in one call", async () => {
    const v = uniqueName("rec");
    const w = uniqueName("rec");
    const first = await apply([point(v, 1, { status: VehicleStatus.IDLE, orderId: "o-1", fleetId: "fa" }), point(w, 1, { fleetId: "fb" })]);
    expect(first.map((a) => a.before)).toEqual([undefined, undefined]);
    expect(first[0]!.record.equals(await stored(v))).toBe(true);
    // Status unspecified and no order: both kept. Then the same vehicle again in the call, with an
    // order and a fleet of its own, moved into another cell; and an older point of w.
    const second = await apply([
      point(v, 2, { fleetId: "fa" }),
      point(v, 3, { status: VehicleStatus.ON_DELIVERY, orderId: "o-2", fleetId: "fc", lat: 40, lon: 3 }),
      point(w, 0, { fleetId: "fb", recordedAt: timestampFromMs(Date.now() - 60_000) }),
    ]);
    expect(second.length).toBe(2);
    const [a, b] = second;
    expect(decodeState(a!.record)).toMatchObject({
      rev: 2,
      seq: 2,
      status: VehicleStatus.IDLE,
      orderId: "o-1",
      fleetId: "fa",
      online: true,
    });
    expect(a!.before!.equals(first[0]!.record)).toBe(true);
    expect(b!.before!.equals(a!.record)).toBe(true);
    expect(decodeState(b!.record)).toMatchObject({ rev: 3, seq: 3, status: VehicleStatus.ON_DELIVERY, orderId: "o-2", fleetId: "fc" });
    expect(b!.record.equals(await stored(v))).toBe(true);
    expect(b!.vehicleId).toBe(v);
    expect(await redis.hget(`${prefix}fleet-orders`, "fc/o-2")).toBe(v);
    expect(await redis.hget(`${prefix}fleet-orders`, "fa/o-1")).toBeNull();
    const counts = await redis.hmget(`${prefix}counts`, "s2|fa", "s3|fc", "s1|fb");
    expect(counts).toEqual(["0", "1", "1"]);
    // A vehicle the sweep took offline comes back with its next point: counted online again, rev bumped.
    const key = `${prefix}st:${bucketOf(w)}`;
    const offline = Buffer.from(await stored(w));
    offline[39] = 0;
    await redis.hset(key, w, offline);
    const back = await apply([point(w, 2, { fleetId: "fb" })]);
    expect(back[0]!.record.equals(await stored(w))).toBe(true);
    expect(decodeState(back[0]!.record)).toMatchObject({ rev: 2, online: true, status: VehicleStatus.ACTIVE });
  });

  test("apply - an order is indexed with its fleet; a vehicle moved to another fleet does not take its order along", async () => {
    const v = uniqueName("fo");
    const u = uniqueName("fo");
    await apply([point(v, 1, { fleetId: "fa", orderId: "ORD-1" }), point(u, 1, { fleetId: "fb", orderId: "ORD-1" })]);
    expect(await store.orderVehicle("fa/ORD-1")).toBe(v);
    expect(await store.orderVehicle("fb/ORD-1")).toBe(u);
    // Same fleet, no order in the point: the order stays. Another fleet, no order: it goes.
    const kept = await apply([point(v, 2, { fleetId: "fa" })]);
    expect(decodeState(kept[0]!.record).orderId).toBe("ORD-1");
    const moved = await apply([point(v, 3, { fleetId: "fc" })]);
    expect(decodeState(moved[0]!.record)).toMatchObject({ fleetId: "fc", orderId: "" });
    expect(moved[0]!.record.equals(await stored(v))).toBe(true);
    expect(await store.orderVehicle("fa/ORD-1")).toBeUndefined();
    expect(await store.orderVehicle("fc/ORD-1")).toBeUndefined();
    expect(await store.orderVehicle("fb/ORD-1")).toBe(u);
  });
  test("bucket - nearby.lua's FNV-1a gives every id the bucket bucket.ts gives it (ASCII, accents, emoji, long ids)", async () => {
    const lua = await Bun.file(new URL("../nearby.lua", import.meta.url)).text();
    const fn = /^local function bucketOf\(s\)\n[\s\S]*?\n^end$/m.exec(lua)?.[0];
    expect(fn).toBeDefined();
    const ids = ["", "a", "truck-9", "vélo", "fahrzeug-ü-€-🚚", "x".repeat(300), "\u{10ffff}\u0080\u07ff\u0800\uffff"];
    // Characters from every UTF-8 length, mixed: each byte value reaches the Lua arithmetic.
    const chars = ["a", "Z", "-", "é", "ß", "€", "中", "🚚", "\u0080", "\uffff"];
    for (let i = 0; i < 500; i++)
      ids.push(Array.from({ length: 1 + (i % 23) }, (_, k) => chars[(i * 7 + k * 13 + ((i * k) % 5)) % chars.length]).join(""));
    const script = `local BUCKETS = 4096\n${fn}\nlocal out = {}\nfor i = 1, #ARGV do out[i] = bucketOf(ARGV[i]) end\nreturn out`;
    const buckets = (await redis.eval(script, 0, ...ids)) as number[];
    expect(buckets).toEqual(ids.map(bucketOf));
  });
});
