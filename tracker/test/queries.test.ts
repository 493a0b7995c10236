/**
 * The consumer (newer wins, counts, shared consumer) and the unary queries through grpc-js,
 * including their bad input and authorization.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { mintVehicleToken, tokenKeys } from "../../lib/auth";
import { VehicleStatus } from "../../gen/fleet/v1/position_pb";
import type { CountByStatusResponse, GetVehicleResponse, NearbyResponse, SetStatusResponse } from "../../gen/fleet/v1/tracker_pb";
import { createTracker } from "../tracker";
import { grpc, grpcClient, point, startTestTracker, uniqueName, unary, waitFor, type TestTracker } from "./helpers";

let t: TestTracker;
let client: grpc.Client;
let admin: string;
beforeAll(async () => {
  t = await startTestTracker();
  client = grpcClient(t.target);
  admin = await t.token({ all: true, dispatch: true });
});
afterAll(async () => {
  client.close();
  await t.close();
});

const get = (id: string, token = admin) => unary<GetVehicleResponse>(client, "getVehicle", token, { vehicleId: id });
/** Waits until the tracker holds this seq of the vehicle. */
const seen = (id: string, seq: number) =>
  waitFor(`${id} at seq ${seq}`, async () => {
    const r = await get(id);
    return r.response?.vehicle?.position?.seq === seq ? r.response : undefined;
  });
const metric = async (url: string, name: string) => {
  const text = await (await fetch(`${url}/metrics`)).text();
  return text.split("\n").filter((l) => l.startsWith(name));
};

describe("consumer", () => {
  test("newer wins - an older (by recorded time) or duplicate point never overwrites a newer one, in one batch or across batches", async () => {
    const v = uniqueName("nw");
    const t0 = Date.now() - 60_000;
    const at = (ms: number) => ({ recordedAt: timestampFromMs(t0 + ms) });
    await t.publish([point(v, 5, { lat: 52.5, ...at(5000) }), point(v, 3, { lat: 10, ...at(3000) })]);
    await seen(v, 5);
    await t.publish([point(v, 5, { lat: 11, ...at(5000) }), point(v, 4, { lat: 12, ...at(4000) })]);
    await t.publish([point(v, 6, { lat: 52.6, ...at(6000) })]);
    const r = await seen(v, 6);
    expect(r.vehicle!.position!.lat).toBeCloseTo(52.6, 6);
    const older = await metric(t.tracker.adminUrl, "tracker_points_total");
    expect(older.some((l) => l.includes('result="older"') && Number(l.split(" ").pop()) >= 3)).toBe(true);
  });

  test("newer wins - two fixes with one recorded time: the first stays, as history keeps the first (both agree)", async () => {
    const [v, w] = [uniqueName("tie"), uniqueName("tie")];
    const same = { recordedAt: timestampFromMs(Date.now() - 1000) };
    // Seq 1 and 2 in one batch, seq 3 in the next: all three recorded at the same time.
    await t.publish([point(w, 1, { lat: 1.5, ...same }), point(w, 2, { lat: 1.6, ...same })]);
    await t.publish([point(w, 3, { lat: 1.7, ...same })]);
    await t.publish([point(v, 1)]); // the stream's order: once v is there, w's points were applied
    await seen(v, 1);
    const r = (await get(w)).response!;
    expect(r.vehicle!.position!.seq).toBe(1);
    expect(r.vehicle!.position!.lat).toBeCloseTo(1.5, 6);
  });

  test("newer wins - a vehicle that reboots and restarts its seqs at 1 shows its newest fix at once; a redelivered point changes nothing", async () => {
    const v = uniqueName("boot");
    const now = Date.now();
    await t.publish([point(v, 900, { lat: 2.0, recordedAt: timestampFromMs(now - 5000) })]);
    await seen(v, 900);
    // Rebooted a few seconds later: seq 1, 2, recorded after the old point (not 10 minutes after).
    await t.publish([point(v, 1, { lat: 2.1, recordedAt: timestampFromMs(now - 3000) })]);
    const first = await seen(v, 1);
    expect(first.vehicle!.position!.lat).toBeCloseTo(2.1, 6);
    await t.publish([point(v, 2, { lat: 2.2, recordedAt: timestampFromMs(now - 2000) })]);
    await seen(v, 2);
    // JetStream redelivers the old seq 900 and seq 1: neither is newer than seq 2's fix.
    await t.publish([
      point(v, 900, { lat: 2.0, recordedAt: timestampFromMs(now - 5000) }),
      point(v, 1, { lat: 2.1, recordedAt: timestampFromMs(now - 3000) }),
    ]);
    await t.publish([point(v, 3, { lat: 2.3, recordedAt: timestampFromMs(now - 1000) })]);
    const r = await seen(v, 3);
    expect(r.vehicle!.position!.lat).toBeCloseTo(2.3, 6);
  });

  test("status - a point's status replaces the stored one, an unspecified one keeps it; counts follow", async () => {
    const fleet = uniqueName("fl");
    const token = await t.token({ fleets: [fleet] });
    const v = uniqueName("st");
    await t.publish([point(v, 1, { fleetId: fleet, status: VehicleStatus.IDLE })]);
    await seen(v, 1);
    await t.publish([point(v, 2, { fleetId: fleet })]);
    const r = await seen(v, 2);
    expect(r.vehicle!.status).toBe(VehicleStatus.IDLE);
    const counts = await unary<CountByStatusResponse>(client, "countByStatus", token, {});
    const byStatus = Object.fromEntries(counts.response!.counts.map((c) => [VehicleStatus[c.status], Number(c.count)]));
    expect(byStatus).toEqual({ ACTIVE: 0, IDLE: 1, ON_DELIVERY: 0, AVAILABLE: 0, OFFLINE: 0 });
  });

  test("shared - two trackers on one durable consumer take every batch between them", async () => {
    const second = await createTracker({ config: t.config, stream: t.stream, subjects: `${t.stream}.pos.>`, prefix: t.prefix });
    try {
      const ids = Array.from({ length: 40 }, () => uniqueName("sh"));
      for (const id of ids) await t.publish([point(id, 1)]);
      for (const id of ids) await seen(id, 1);
      const handled = async (url: string) =>
        (await metric(url, "tracker_batches_total"))
          .filter((l) => l.includes('result="ok"'))
          .reduce((n, l) => n + Number(l.split(" ").pop()), 0);
      expect(await handled(second.adminUrl)).toBeGreaterThan(0);
    } finally {
      await second.close();
    }
  });
});

describe("queries", () => {
  test("get - unknown vehicle is NOT_FOUND for a token that names it or grants all", async () => {
    const v = uniqueName("none");
    const r = await get(v);
    expect(r.error?.code).toBe(grpc.status.NOT_FOUND);
    expect(r.error?.details).toContain("never saw it");
    const named = await get(v, await t.token({ vehicles: [v] }));
    expect(named.error?.code).toBe(grpc.status.NOT_FOUND);
  });

  test("get - a vehicle outside the token's grant is PERMISSION_DENIED; a vehicle token or none is refused", async () => {
    const v = uniqueName("own");
    await t.publish([point(v, 1, { fleetId: "fleet-x" })]);
    await seen(v, 1);
    const other = await get(v, await t.token({ fleets: ["fleet-y"], vehicles: ["someone-else"] }));
    expect(other.error?.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(other.error?.details).toContain(`does not grant vehicle "${v}"`);
    expect((await get(v, await t.token({ fleets: ["fleet-x"] }))).response?.vehicle?.position?.vehicleId).toBe(v);
    const vehicleToken = await mintVehicleToken(tokenKeys(t.config), v);
    expect((await get(v, vehicleToken)).error?.code).toBe(grpc.status.PERMISSION_DENIED);
    const none = await unary<GetVehicleResponse>(client, "getVehicle", undefined, { vehicleId: v });
    expect(none.error?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(none.error?.details).toContain("missing token");
    expect((await get(v, "not-a-jwt")).error?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect((await get("", admin)).error?.code).toBe(grpc.status.INVALID_ARGUMENT);
  });

  test("nearby - radius and box, nearest first, status filter, limit, only granted vehicles", async () => {
    const fleet = uniqueName("nb");
    const token = await t.token({ fleets: [fleet] });
    // Ten vehicles north of a centre, 100 m apart, every other one AVAILABLE; one of another fleet on top of the centre.
    const lat0 = -20.0,
      lon0 = 30.0;
    const ids = Array.from({ length: 10 }, (_, i) => `${fleet}-v${i}`);
    await t.publish(
      ids.map((id, i) =>
        point(id, 1, {
          fleetId: fleet,
          lat: lat0 + ((i + 1) * 100) / 111_195,
          lon: lon0,
          status: i % 2 ? VehicleStatus.AVAILABLE : VehicleStatus.ACTIVE,
        }),
      ),
    );
    const stranger = uniqueName("stranger");
    await t.publish([point(stranger, 1, { fleetId: "other", lat: lat0, lon: lon0 })]);
    await seen(ids[9]!, 1);
    await seen(stranger, 1);
    const near = (req: object) => unary<NearbyResponse>(client, "nearby", token, req);

    const all = await near({ area: { shape: { case: "circle", value: { lat: lat0, lon: lon0, radiusM: 2000 } } } });
    expect(all.response!.vehicles.map((v) => v.vehicle!.position!.vehicleId)).toEqual(ids);
    const d = all.response!.vehicles.map((v) => v.distanceM);
    expect(d[0]).toBeCloseTo(100, 0);
    expect([...d].sort((a, b) => a - b)).toEqual(d);

    const avail = await near({
      area: { shape: { case: "circle", value: { lat: lat0, lon: lon0, radiusM: 2000 } } },
      statuses: [VehicleStatus.AVAILABLE],
      limit: 3,
    });
    expect(avail.response!.vehicles.map((v) => v.vehicle!.position!.vehicleId)).toEqual([ids[1]!, ids[3]!, ids[5]!]);

    const inRadius = await near({ area: { shape: { case: "circle", value: { lat: lat0, lon: lon0, radiusM: 450 } } } });
    expect(inRadius.response!.vehicles.length).toBe(4);

    const box = await near({
      area: {
        shape: {
          case: "box",
          value: { minLat: lat0 + 250 / 111_195, minLon: lon0 - 0.001, maxLat: lat0 + 650 / 111_195, maxLon: lon0 + 0.001 },
        },
      },
    });
    expect(box.response!.vehicles.map((v) => v.vehicle!.position!.vehicleId)).toEqual(
      [ids[2]!, ids[3]!, ids[4]!, ids[5]!].sort((a, b) => {
        // nearest to the box's centre first
        const c = lat0 + 450 / 111_195;
        const lat = (id: string) => lat0 + ((ids.indexOf(id) + 1) * 100) / 111_195;
        return Math.abs(lat(a) - c) - Math.abs(lat(b) - c);
      }),
    );
  });

  test("nearby - finds vehicles whose ids are not ASCII (Redis and the tracker agree on their bucket)", async () => {
    const fleet = uniqueName("utf");
    const ids = [`${fleet}-véhicule`, `${fleet}-車両`, `${fleet}-🚚`];
    await t.publish(ids.map((id, i) => point(id, 1, { fleetId: fleet, lat: 35.0 + i * 1e-4, lon: 139.0 })));
    for (const id of ids) await seen(id, 1);
    const r = await unary<NearbyResponse>(client, "nearby", await t.token({ fleets: [fleet] }), {
      area: { shape: { case: "circle", value: { lat: 35.0, lon: 139.0, radiusM: 500 } } },
    });
    expect(r.response!.vehicles.map((v) => v.vehicle!.position!.vehicleId)).toEqual(ids);
  });

  test("nearby - bad input is INVALID_ARGUMENT with the reason", async () => {
    const near = (req: object) => unary<NearbyResponse>(client, "nearby", admin, req);
    const cases: [object, string][] = [
      [{}, "area is missing"],
      [{ area: { shape: { case: "circle", value: { lat: 0, lon: 0, radiusM: 0 } } } }, "must be above 0"],
      [{ area: { shape: { case: "circle", value: { lat: 0, lon: 0, radiusM: 1e12 } } } }, "at most"],
      [{ area: { shape: { case: "box", value: { minLat: 1, minLon: 1, maxLat: 0, maxLon: 2 } } } }, "inverted"],
      [{ area: { shape: { case: "box", value: { minLat: 0, minLon: 0, maxLat: 100, maxLon: 1 } } } }, "lat -90..90"],
      [{ area: { shape: { case: "circle", value: { lat: 0, lon: 0, radiusM: 10 } } }, limit: 1_000_000 }, "past the maximum"],
      [{ area: { shape: { case: "circle", value: { lat: 0, lon: 0, radiusM: 10 } } }, statuses: [0] }, "is not a status"],
    ];
    for (const [req, reason] of cases) {
      const r = await near(req);
      expect(r.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(r.error?.details).toContain(reason);
    }
  });

  test("count - a token counts only what it grants: its fleets, its vehicles, its orders", async () => {
    const fleet = uniqueName("cf");
    const a = uniqueName("ca");
    const b = uniqueName("cb");
    const c = uniqueName("cc");
    const elsewhere = uniqueName("elsewhere");
    await t.publish([
      point(a, 1, { fleetId: fleet }),
      point(b, 1, { fleetId: fleet, status: VehicleStatus.AVAILABLE }),
      point(c, 1, { fleetId: elsewhere, orderId: `${c}-order`, status: VehicleStatus.ON_DELIVERY }),
    ]);
    await seen(c, 1);
    const count = async (token: string, fleetId = "") => {
      const r = await unary<CountByStatusResponse>(client, "countByStatus", token, { fleetId });
      return Object.fromEntries(r.response!.counts.filter((x) => x.count > 0n).map((x) => [VehicleStatus[x.status], Number(x.count)]));
    };
    expect(await count(await t.token({ fleets: [fleet] }))).toEqual({ ACTIVE: 1, AVAILABLE: 1 });
    expect(await count(await t.token({ fleets: [fleet], orders: [`${elsewhere}/${c}-order`] }))).toEqual({
      ACTIVE: 1,
      AVAILABLE: 1,
      ON_DELIVERY: 1,
    });
    expect(await count(await t.token({ vehicles: [a] }))).toEqual({ ACTIVE: 1 });
    expect(await count(await t.token({ vehicles: [a] }), fleet)).toEqual({ ACTIVE: 1 });
    expect(await count(await t.token({ vehicles: [a] }), "another")).toEqual({});
    expect(await count(admin, fleet)).toEqual({ ACTIVE: 1, AVAILABLE: 1 });
  });

  test("orders - an order is one of a fleet: a fleet-B vehicle sending ORD-1 is not seen by a token for A/ORD-1", async () => {
    const [fleetA, fleetB] = [uniqueName("oa"), uniqueName("ob")];
    const [a, b] = [uniqueName("va"), uniqueName("vb")];
    await t.publish([
      point(a, 1, { fleetId: fleetA, orderId: "ORD-1", lat: -33.9, lon: 18.4 }),
      point(b, 1, { fleetId: fleetB, orderId: "ORD-1", lat: -33.9, lon: 18.4001 }),
    ]);
    await seen(b, 1);
    const customer = await t.token({ orders: [`${fleetA}/ORD-1`] });
    expect((await get(a, customer)).response?.vehicle?.orderId).toBe("ORD-1");
    const denied = await get(b, customer);
    expect(denied.error?.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(denied.error?.details).toContain(`does not grant vehicle "${b}"`);
    const near = await unary<NearbyResponse>(client, "nearby", customer, {
      area: { shape: { case: "circle", value: { lat: -33.9, lon: 18.4, radiusM: 500 } } },
    });
    expect(near.response!.vehicles.map((v) => v.vehicle!.position!.vehicleId)).toEqual([a]);
    const counts = await unary<CountByStatusResponse>(client, "countByStatus", customer, {});
    expect(counts.response!.counts.reduce((n, c) => n + Number(c.count), 0)).toBe(1);
    // B's own order grant sees b, not a.
    const other = await t.token({ orders: [`${fleetB}/ORD-1`] });
    expect((await get(b, other)).response?.vehicle?.position?.fleetId).toBe(fleetB);
    expect((await get(a, other)).error?.code).toBe(grpc.status.PERMISSION_DENIED);
  });

  test("set status - a dispatcher marks a vehicle on delivery with its order; others are refused", async () => {
    const fleet = uniqueName("ss");
    const v = uniqueName("sv");
    await t.publish([point(v, 1, { fleetId: fleet })]);
    await seen(v, 1);
    const dispatcher = await t.token({ fleets: [fleet], dispatch: true });
    const set = (token: string, req: object) => unary<SetStatusResponse>(client, "setStatus", token, req);
    const ok = await set(dispatcher, { vehicleId: v, status: VehicleStatus.ON_DELIVERY, orderId: "o-1" });
    expect(ok.error).toBeUndefined();
    expect(ok.response!.vehicle!.status).toBe(VehicleStatus.ON_DELIVERY);
    expect(ok.response!.vehicle!.orderId).toBe("o-1");
    // A point without status keeps the dispatcher's status and order.
    await t.publish([point(v, 2, { fleetId: fleet })]);
    const after = await seen(v, 2);
    expect(after.vehicle!.status).toBe(VehicleStatus.ON_DELIVERY);
    expect(after.vehicle!.orderId).toBe("o-1");
    // The order grant now shows the vehicle.
    expect((await get(v, await t.token({ orders: [`${fleet}/o-1`] }))).response?.vehicle?.orderId).toBe("o-1");

    expect((await set(await t.token({ fleets: [fleet] }), { vehicleId: v, status: VehicleStatus.AVAILABLE })).error?.code).toBe(
      grpc.status.PERMISSION_DENIED,
    );
    expect(
      (await set(await t.token({ fleets: ["other"], dispatch: true }), { vehicleId: v, status: VehicleStatus.AVAILABLE })).error?.code,
    ).toBe(grpc.status.PERMISSION_DENIED);
    const offline = await set(dispatcher, { vehicleId: v, status: VehicleStatus.OFFLINE });
    expect(offline.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(offline.error?.details).toContain("cannot be set");
    expect((await set(dispatcher, { vehicleId: v, status: VehicleStatus.ON_DELIVERY })).error?.details).toContain("needs the order_id");
    const nul = await set(dispatcher, { vehicleId: v, status: VehicleStatus.ON_DELIVERY, orderId: "o\u00002" });
    expect(nul.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(nul.error?.details).toContain("order_id has a control character (U+0000) at position 1");
    expect((await set(admin, { vehicleId: uniqueName("ghost"), status: VehicleStatus.IDLE })).error?.code).toBe(grpc.status.NOT_FOUND);
    const back = await set(dispatcher, { vehicleId: v, status: VehicleStatus.AVAILABLE, orderId: "" });
    expect(back.response!.vehicle!.orderId).toBe("");
    expect((await get(v, await t.token({ orders: [`${fleet}/o-1`] }))).error?.code).toBe(grpc.status.PERMISSION_DENIED);
  });

  test("staleness - a vehicle not heard from leaves the GEO set, counts as offline, and Get says online false", async () => {
    const fleet = uniqueName("stale");
    const v = uniqueName("old");
    const token = await t.token({ fleets: [fleet] });
    // Heard from (received_at) ten minutes ago: past the 5-minute default.
    await t.publish([point(v, 1, { fleetId: fleet, lat: 1, lon: 1, receivedAt: timestampFromMs(Date.now() - 600_000) })]);
    await seen(v, 1);
    const area = { area: { shape: { case: "circle", value: { lat: 1, lon: 1, radiusM: 100 } } } };
    expect((await unary<NearbyResponse>(client, "nearby", token, area)).response!.vehicles.length).toBe(1);
    expect(await t.tracker.sweep()).toBeGreaterThanOrEqual(1);
    const r = await get(v);
    expect(r.response!.vehicle!.online).toBe(false);
    expect(r.response!.vehicle!.status).toBe(VehicleStatus.OFFLINE);
    expect((await unary<NearbyResponse>(client, "nearby", token, area)).response!.vehicles.length).toBe(0);
    const counts = await unary<CountByStatusResponse>(client, "countByStatus", token, {});
    expect(Number(counts.response!.counts.find((c) => c.status === VehicleStatus.OFFLINE)!.count)).toBe(1);
    expect(Number(counts.response!.counts.find((c) => c.status === VehicleStatus.ACTIVE)!.count)).toBe(0);
    // A new point brings it back.
    await t.publish([point(v, 2, { fleetId: fleet, lat: 1, lon: 1 })]);
    expect((await seen(v, 2)).vehicle!.online).toBe(true);
    expect((await unary<NearbyResponse>(client, "nearby", token, area)).response!.vehicles.length).toBe(1);
  });
});
