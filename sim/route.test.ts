import { describe, expect, test } from "bun:test";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { VehicleStatus } from "../gen/fleet/v1/position_pb";
import { LIMITS, createCity, createRng, createVehicleModel, type Fix } from "./route";

const START_MS = Date.UTC(2025, 0, 1, 8, 0, 0);

/** Drives `vehicles` vehicles for `seconds` at 1 Hz and returns every fix per vehicle. */
function drive(vehicles: number, seconds: number, badFixRate = 0, rotationDeg = 0): Fix[][] {
  const city = createCity({ rotationDeg });
  const rng = createRng(42);
  const out: Fix[][] = [];
  for (let k = 0; k < vehicles; k++) {
    const model = createVehicleModel(city, `veh-${k}`, rng, { badFixRate });
    const fixes: Fix[] = [];
    for (let t = 1; t <= seconds; t++) {
      model.step(1, t);
      fixes.push(model.fix(START_MS + t * 1000));
    }
    out.push(fixes);
  }
  return out;
}

const angleDiff = (a: number, b: number) => Math.abs(((a - b + 540) % 360) - 180);

describe("route", () => {
  const runs = drive(20, 1800);

  test("route - speeds stay within urban bounds and change at plausible rates", () => {
    for (const fixes of runs) {
      for (let k = 1; k < fixes.length; k++) {
        const a = fixes[k - 1]!.truth;
        const b = fixes[k]!.truth;
        expect(b.speed).toBeGreaterThanOrEqual(0);
        expect(b.speed).toBeLessThanOrEqual(LIMITS.maxSpeed);
        // One second apart: no faster than the acceleration and braking limits (a little slack for rounding).
        expect(b.speed - a.speed).toBeLessThanOrEqual(LIMITS.accel + 1e-9);
        expect(a.speed - b.speed).toBeLessThanOrEqual(LIMITS.brake + 1e-9);
        // Distance covered in 1 s never beats the top speed.
        expect(Math.hypot(b.x - a.x, b.y - a.y)).toBeLessThanOrEqual(LIMITS.maxSpeed + 1e-6);
      }
    }
  });

  test("route - the heading follows the street the vehicle moves along", () => {
    let checked = 0;
    for (const fixes of runs) {
      for (let k = 1; k < fixes.length; k++) {
        const a = fixes[k - 1]!.truth;
        const b = fixes[k]!.truth;
        const moved = Math.hypot(b.x - a.x, b.y - a.y);
        // Same segment for the whole second (no turn in between) and really moving.
        if (moved < 2 || b.onSegmentSince !== a.onSegmentSince) continue;
        const bearing = ((Math.atan2(b.x - a.x, b.y - a.y) * 180) / Math.PI + 360) % 360;
        expect(angleDiff(bearing, b.heading)).toBeLessThan(0.5);
        // The reported heading carries only a little noise.
        expect(angleDiff(fixes[k]!.position.heading!, b.heading)).toBeLessThan(10);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(10_000);
  });

  test("route - vehicles stop (lights, deliveries), turn and serve orders", () => {
    let stopped = 0;
    let total = 0;
    const headings = new Set<number>();
    const orders = new Set<string>();
    let onDelivery = 0;
    for (const fixes of runs) {
      for (const f of fixes) {
        total++;
        if (f.truth.stopped) stopped++;
        headings.add(f.truth.heading);
        if (f.position.status === VehicleStatus.ON_DELIVERY) {
          onDelivery++;
          expect(f.position.orderId).toStartWith("order-");
          orders.add(f.position.orderId!);
        } else expect(f.position.orderId).toBe("");
      }
    }
    expect(stopped / total).toBeGreaterThan(0.05);
    expect(stopped / total).toBeLessThan(0.7);
    expect(headings.size).toBe(4);
    expect(orders.size).toBeGreaterThan(20);
    expect(onDelivery / total).toBeGreaterThan(0.1);
  });

  test("route - fixes stay near the city centre with metre-scale jitter", () => {
    for (const fixes of runs) {
      for (const f of fixes) {
        const { lat, lon, accuracy } = f.position;
        expect(Math.abs(lat! - 52.52)).toBeLessThan(0.03);
        expect(Math.abs(lon! - 13.405)).toBeLessThan(0.05);
        expect(accuracy).toBeGreaterThanOrEqual(3);
        expect(accuracy).toBeLessThanOrEqual(10);
      }
    }
  });

  test("route - a rotated grid rotates the headings", () => {
    const [fixes] = drive(1, 600, 0, 29);
    const seen = new Set(fixes!.map((f) => Math.round(f.truth.heading)));
    for (const h of seen) expect([29, 119, 209, 299]).toContain(h);
  });

  test("route - bad fixes come at the configured rate and are really bad", () => {
    const rate = 0.02;
    const bad = drive(10, 3000, rate).flat();
    const bads = bad.filter((f) => f.bad);
    const share = bads.length / bad.length;
    expect(share).toBeGreaterThan(rate * 0.7);
    expect(share).toBeLessThan(rate * 1.3);
    const kinds = new Set(bads.map((f) => f.bad));
    expect(kinds).toEqual(new Set(["nan", "out-of-range", "future"]));
    for (const f of bads) {
      const lat = f.position.lat!;
      const at = timestampMs(f.position.recordedAt as never);
      if (f.bad === "nan") expect(Number.isNaN(lat)).toBe(true);
      if (f.bad === "out-of-range") expect(lat).toBeGreaterThan(90);
      if (f.bad === "future") expect(at).toBeGreaterThan(START_MS + 3_000_000);
    }
    // Good fixes are all valid.
    for (const f of bad.filter((x) => !x.bad)) expect(Number.isFinite(f.position.lat!)).toBe(true);
  });
});
