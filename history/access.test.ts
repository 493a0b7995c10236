import { expect, test } from "bun:test";
import { accessOf, seesPoint, seesWholeVehicle } from "./access";

const watch = (over: object) => ({ role: "watch" as const, vehicles: [], fleets: [], orders: [], all: false, dispatch: false, ...over });

test("access - a vehicle token sees no history", () => {
  expect(() => accessOf({ role: "vehicle", vehicleId: "v1", fleetId: "f" })).toThrow(/watch token/);
});

test("access - listed vehicles, fleets and orders, nothing else", () => {
  const a = accessOf(watch({ vehicles: ["v1"], fleets: ["north"], orders: ["south/o7"] }));
  expect(seesWholeVehicle(a, "v1")).toBe(true);
  expect(seesWholeVehicle(a, "v2")).toBe(false);
  expect(seesPoint(a, { vehicleId: "v2", fleetId: "north", orderId: "" })).toBe(true);
  expect(seesPoint(a, { vehicleId: "v2", fleetId: "south", orderId: "o7" })).toBe(true);
  expect(seesPoint(a, { vehicleId: "v2", fleetId: "south", orderId: "" })).toBe(false);
  expect(seesPoint(a, { vehicleId: "v2", fleetId: "", orderId: "" })).toBe(false);
});

test("access - an order grant sees that order of its fleet only", () => {
  const a = accessOf(watch({ orders: ["fleet-a/ORD-1", "no-fleet"] }));
  expect(a.orders).toEqual([{ fleetId: "fleet-a", orderId: "ORD-1" }]);
  expect(seesPoint(a, { vehicleId: "v1", fleetId: "fleet-a", orderId: "ORD-1" })).toBe(true);
  // A fleet-B vehicle that sends the same order id is not fleet A's order.
  expect(seesPoint(a, { vehicleId: "v2", fleetId: "fleet-b", orderId: "ORD-1" })).toBe(false);
  expect(seesPoint(a, { vehicleId: "v3", fleetId: "", orderId: "ORD-1" })).toBe(false);
});

test("access - all sees everything", () => {
  const a = accessOf(watch({ all: true }));
  expect(seesPoint(a, { vehicleId: "x", fleetId: "", orderId: "" })).toBe(true);
});
