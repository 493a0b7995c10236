import { expect, test } from "bun:test";
import { boxContains, graticule, gridSteps, halfDiagonalM, limitBox, nextWatchedArea, padBox } from "./map-view";

const VIEW = { minLat: 52.5, minLon: 13.4, maxLat: 52.52, maxLon: 13.44 };

test("map view - the first watch is the view padded by half its size on every side", () => {
  const padded = padBox(VIEW, 0.5);
  const expected = { minLat: 52.49, minLon: 13.38, maxLat: 52.53, maxLon: 13.46 };
  for (const k of Object.keys(expected) as (keyof typeof expected)[]) expect(padded[k]).toBeCloseTo(expected[k], 9);
  const first = nextWatchedArea(undefined, VIEW)!;
  expect(first.minLat).toBeCloseTo(52.49, 9);
  expect(first.maxLon).toBeCloseTo(13.46, 9);
});

test("map view - a pan inside the padding keeps the watch; past it, a new one around the new view", () => {
  const watched = nextWatchedArea(undefined, VIEW)!;
  const nudged = { ...VIEW, minLon: VIEW.minLon + 0.01, maxLon: VIEW.maxLon + 0.01 };
  expect(nextWatchedArea(watched, nudged)).toBeUndefined();
  const far = { ...VIEW, minLon: VIEW.minLon + 0.05, maxLon: VIEW.maxLon + 0.05 };
  const next = nextWatchedArea(watched, far)!;
  expect(boxContains(next, far)).toBe(true);
});

test("map view - zooming out re-watches; zooming in a little keeps the watch, a lot narrows it", () => {
  const watched = nextWatchedArea(undefined, VIEW)!;
  const out = padBox(VIEW, 0.6);
  expect(nextWatchedArea(watched, out)).toBeDefined();
  const inALittle = padBox(VIEW, -0.1);
  expect(nextWatchedArea(watched, inALittle)).toBeUndefined();
  const inALot = padBox(VIEW, -0.4);
  const narrowed = nextWatchedArea(watched, inALot)!;
  expect(narrowed).toBeDefined();
  expect(boxContains(watched, narrowed)).toBe(true);
});

test("map view - an area larger than the tracker takes is shrunk around its centre", () => {
  const europe = { minLat: 40, minLon: 0, maxLat: 55, maxLon: 20 };
  const limited = limitBox(europe, 150_000);
  expect(Math.abs(halfDiagonalM(limited) - 150_000)).toBeLessThan(7_500);
  expect((limited.minLat + limited.maxLat) / 2).toBeCloseTo(47.5, 9);
  expect(limitBox(VIEW, 150_000)).toBe(VIEW);
  expect(halfDiagonalM(nextWatchedArea(undefined, europe)!)).toBeLessThan(157_500);
});

test("map view - grid lines fall on round degrees and the graticule covers the view", () => {
  expect(gridSteps(52.4975, 52.5425)).toEqual([52.5, 52.51, 52.52, 52.53, 52.54]);
  const lines = graticule(VIEW);
  expect(lines.length).toBeGreaterThan(4);
  for (const line of lines)
    for (const [lon, lat] of line) expect(boxContains(VIEW, { minLat: lat, maxLat: lat, minLon: lon, maxLon: lon })).toBe(true);
});
