import { expect, test } from "bun:test";
import { simplifyColumns, simplifyIndexes, type TrackPoint } from "./simplify";

const drive = (n: number, f: (i: number) => Partial<TrackPoint>): TrackPoint[] =>
  Array.from({ length: n }, (_, i) => ({ lat: 52.5, lon: 13.4 + i * 1e-4, t: i * 1000, speed: 10, heading: 90, ...f(i) }));

test("simplify - a track within the budget is returned whole", () => {
  expect(
    simplifyIndexes(
      drive(10, () => ({})),
      10,
    ),
  ).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

test("simplify - a straight line shrinks to its ends", () => {
  const idx = simplifyIndexes(
    drive(1000, () => ({})),
    50,
  );
  expect(idx[0]).toBe(0);
  expect(idx.at(-1)).toBe(999);
  expect(idx.length).toBeLessThanOrEqual(50);
});

test("simplify - keeps a right-angle turn and a stop", () => {
  // East for 500 points, then north; a stop from 700 to 760.
  const pts = drive(1000, (i) =>
    i < 500 ? {} : { lon: 13.4 + 499e-4, lat: 52.5 + (i - 499) * 1e-4, heading: 0, speed: i >= 700 && i < 760 ? 0 : 10 },
  );
  for (let i = 700; i < 760; i++) pts[i] = { ...pts[699]!, t: i * 1000, speed: 0 };
  const idx = simplifyIndexes(pts, 20);
  expect(idx.length).toBeLessThanOrEqual(20);
  expect(idx).toContain(500); // the turn (heading 90 -> 0)
  expect(idx).toContain(700); // stops
  expect(idx).toContain(760); // starts again
});

test("simplify - the budget holds when there are more turns than points allowed", () => {
  const zigzag = drive(2000, (i) => ({ heading: i % 2 ? 0 : 90, lat: 52.5 + (i % 2) * 1e-4 }));
  const idx = simplifyIndexes(zigzag, 100);
  expect(idx.length).toBe(100);
  expect(idx[0]).toBe(0);
  expect(idx.at(-1)).toBe(1999);
});

test("simplify - the error left after simplifying a curve is small", () => {
  const circle = drive(3600, (i) => ({
    lat: 52.5 + 0.01 * Math.sin(i / 573),
    lon: 13.4 + 0.016 * Math.cos(i / 573),
    heading: (i / 10) % 360,
  }));
  const idx = simplifyIndexes(circle, 200);
  expect(idx.length).toBeLessThanOrEqual(200);
  expect(idx.length).toBeGreaterThan(20);
});

test("simplify - columns (typed arrays) keep the same points as objects", () => {
  const pts = drive(5000, (i) => ({
    lat: 52.5 + 0.01 * Math.sin(i / 300),
    lon: 13.4 + i * 1e-5,
    speed: (i / 400) % 3 < 1 ? 0 : 9,
    heading: (i * 3) % 360,
  }));
  const cols = {
    length: pts.length,
    lat: Float64Array.from(pts, (p) => p.lat),
    lon: Float64Array.from(pts, (p) => p.lon),
    speed: Float32Array.from(pts, (p) => p.speed),
    heading: Float32Array.from(pts, (p) => p.heading),
  };
  for (const budget of [10, 300, 5000]) expect(simplifyColumns(cols, budget)).toEqual(simplifyIndexes(pts, budget));
});
