import { expect, test } from "bun:test";
import type { LiveEvent, LiveVehicle } from "../client/live";
import { cityBox, createCity } from "../sim/route";
import { VehicleStatus } from "../gen/fleet/v1/position_pb";
import { createMapState, DEFAULT_BOX, parseBox, parsePageParams, reachableUrl, STATUS_COLOURS } from "./map-state";
import { gridSteps } from "./map-view";

test("map - the default box holds the simulator's default city", () => {
  const city = cityBox(createCity(), 0);
  expect(DEFAULT_BOX.minLat).toBeLessThan(city.minLat);
  expect(DEFAULT_BOX.minLon).toBeLessThan(city.minLon);
  expect(DEFAULT_BOX.maxLat).toBeGreaterThan(city.maxLat);
  expect(DEFAULT_BOX.maxLon).toBeGreaterThan(city.maxLon);
});

test("map - the URL gives the box in the query and the token in the fragment; a bad box says what it wants", () => {
  const p = parsePageParams("?box=1,2,3,4&tracker=http://h:1", "#token=abc.def.ghi");
  expect(p).toEqual({ box: { minLat: 1, minLon: 2, maxLat: 3, maxLon: 4 }, token: "abc.def.ghi", tracker: "http://h:1" });
  expect(parsePageParams("", "")).toEqual({ box: { ...DEFAULT_BOX }, token: "", tracker: undefined });
  expect(() => parseBox("1,2,3")).toThrow("expected minLat,minLon,maxLat,maxLon");
  expect(() => parseBox("3,2,1,4")).toThrow("min must be below max");
});

test("map - a tracker bound to every interface is reached by the host the page came from", () => {
  expect(reachableUrl("http://0.0.0.0:50052", "fleet.example")).toBe("http://fleet.example:50052");
  expect(reachableUrl("http://[::]:50052", "10.0.0.7")).toBe("http://10.0.0.7:50052");
  expect(reachableUrl("http://127.0.0.1:50052", "fleet.example")).toBe("http://127.0.0.1:50052");
});

test("map - grid lines fall on round degrees", () => {
  expect(gridSteps(52.4975, 52.5425)).toEqual([52.5, 52.51, 52.52, 52.53, 52.54]);
});

const vehicle = (id: string, fields: Partial<LiveVehicle> = {}): LiveVehicle => ({
  id,
  fleetId: "",
  orderId: "",
  status: VehicleStatus.UNSPECIFIED,
  seq: 1,
  lat: 52.5,
  lon: 13.4,
  speed: 0,
  heading: 0,
  accuracy: 0,
  recordedAtMs: 0,
  lastSeenMs: 0,
  online: true,
  ...fields,
});
const END: LiveEvent = { kind: "snapshotEnd", resumed: false };

test("map - coalesced updates count into updates/s and the coalesced total; the snapshot does not count as updates", () => {
  const state = createMapState({ rateWindowMs: 1000 });
  const at = (kind: "snapshot" | "move", seq: number, coalesced = 0): LiveEvent => ({
    kind,
    coalesced,
    vehicle: vehicle("v", { seq, lon: 13.4 + seq / 1000 }),
  });
  state.apply([at("snapshot", 1), END], 10_000);
  expect(state.updatesPerSecond(10_000)).toBe(0);
  state.apply([at("move", 5, 3)], 10_500);
  expect(state.coalesced).toBe(3);
  expect(state.updatesPerSecond(10_600)).toBe(4);
  expect(state.updatesPerSecond(11_600)).toBe(0);
  expect(state.vehicles.get("v")).toMatchObject({ seq: 5, online: true });
  expect(state.vehicles.get("v")!.trail).toHaveLength(2);
});

test("map - render buffers: a slot per vehicle, reused after an exit; a filter hides by alpha and counts what is shown", () => {
  const state = createMapState({ trailLength: 0 });
  const at = (kind: "snapshot" | "enter", id: string, fleetId: string, status: VehicleStatus, lon: number): LiveEvent => ({
    kind,
    coalesced: 0,
    vehicle: vehicle(id, { fleetId, status, lon }),
  });
  state.apply([at("snapshot", "a", "north", VehicleStatus.AVAILABLE, 13.1), at("snapshot", "b", "south", VehicleStatus.ACTIVE, 13.2), END]);
  const a = state.vehicles.get("a")!;
  expect(state.slotCount).toBe(2);
  expect(state.positions[2 * a.slot]).toBeCloseTo(13.1, 5);
  expect([...state.colours.subarray(4 * a.slot, 4 * a.slot + 4)]).toEqual([...STATUS_COLOURS[VehicleStatus.AVAILABLE]!]);
  expect(state.shownCount()).toBe(2);
  expect([...state.fleets].sort()).toEqual(["north", "south"]);

  state.setFilter({ statuses: new Set(), fleets: new Set(["south"]), offline: true });
  expect(state.shownCount()).toBe(1);
  expect(state.colours[4 * a.slot + 3]).toBe(0);
  state.setFilter({ statuses: new Set([VehicleStatus.AVAILABLE]), fleets: new Set(), offline: true });
  expect(state.shownCount()).toBe(1);
  expect(state.colours[4 * a.slot + 3]).toBe(255);

  const before = state.version;
  state.apply([{ kind: "exit", vehicleId: "a", vehicle: undefined }]);
  expect(state.version).toBeGreaterThan(before);
  expect(state.vehicleAt(a.slot)).toBeUndefined();
  expect(state.shownCount()).toBe(0);
  state.apply([at("enter", "c", "north", VehicleStatus.AVAILABLE, 13.3)]);
  expect(state.vehicles.get("c")!.slot).toBe(a.slot);
  expect(state.slotCount).toBe(2);
  expect(state.vehicleAt(a.slot)?.id).toBe("c");
});

test("map - a new area's snapshot drops what it does not name; a resumed watch (no restart) keeps what it does not repeat", () => {
  const state = createMapState();
  const snap = (id: string): LiveEvent => ({ kind: "snapshot", coalesced: 0, vehicle: vehicle(id) });
  state.apply([snap("a"), snap("b"), END]);
  state.reconnecting();
  expect(state.live).toBe(false);
  // Resumed: the client hands on only what changed (nothing here), then the end.
  state.apply([{ kind: "snapshotEnd", resumed: true }]);
  expect(state.live).toBe(true);
  expect([...state.vehicles.keys()].sort()).toEqual(["a", "b"]);
  // A new area: its snapshot names only b.
  state.restart();
  state.apply([snap("b"), END]);
  expect([...state.vehicles.keys()]).toEqual(["b"]);
});
