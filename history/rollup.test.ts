import { expect, test } from "bun:test";
import { rollupOf } from "./rollup";
import { prepareRows, type Row } from "./row";

test("rollup - per vehicle and minute, legs inside the batch, first points for the rest", () => {
  const t = Date.UTC(2026, 10, 21, 12, 0, 58) * 1000;
  const base = { seq: 1, fleetId: "", heading: 0, accuracy: 0, orderId: "", status: 0, receivedUs: NaN };
  const pts: Row[] = [
    { ...base, vehicleId: "a", us: t + 2_000_000, lat: 0.0002, lon: 0, speed: 4 }, // next minute
    { ...base, vehicleId: "b", us: t, lat: 5, lon: 5, speed: 1 },
    { ...base, vehicleId: "a", us: t, lat: 0, lon: 0, speed: 2 },
    { ...base, vehicleId: "a", us: t + 1_000_000, lat: 0.0001, lon: 0, speed: 6 },
  ];
  // Out of order, as a batch may hold them: prepareRows puts each vehicle's points in time order.
  const { rows, firsts } = rollupOf(prepareRows(pts).byVehicle);
  expect(firsts.vehicle).toEqual(["a", "b"]);
  expect(firsts.us).toEqual([t, t]);
  expect(rows.vehicle).toEqual(["a", "a", "b"]);
  expect(rows.points).toEqual([2, 1, 1]);
  expect(rows.maxSpeed).toEqual([6, 4, 1]);
  expect(rows.sumSpeed).toEqual([8, 4, 1]);
  expect(rows.distance[0]).toBeCloseTo(11.12, 1);
  expect(rows.distance[1]).toBeCloseTo(11.12, 1); // the leg into the new minute counts there
  expect(rows.distance[2]).toBe(0);
});
