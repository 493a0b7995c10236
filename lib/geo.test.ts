import { expect, test } from "bun:test";
import { distanceM, EARTH_MEAN_RADIUS_M, REDIS_EARTH_RADIUS_M } from "./geo";

test("geo - on Redis's sphere, matches Redis GEODIST for Berlin-Potsdam within a metre", () => {
  // GEODIST of (13.405 52.52) and (13.0645 52.3906) on Redis 7.0: 27198.9118 m
  expect(distanceM(52.52, 13.405, 52.3906, 13.0645, REDIS_EARTH_RADIUS_M)).toBeCloseTo(27198.9, 0);
});

test("geo - on the mean sphere, a degree of the equator is 111,195 m, as fleet_distance_m has it", () => {
  // fleet_distance_m(0, 0, 0, 1) = 2 * 6371008.8 * asin(sin(radians(1) / 2)) = 111195.08 m
  expect(distanceM(0, 0, 0, 1, EARTH_MEAN_RADIUS_M)).toBeCloseTo(111_195.08, 1);
  expect(distanceM(0, 1, 0, 0, EARTH_MEAN_RADIUS_M)).toBe(distanceM(0, 0, 0, 1, EARTH_MEAN_RADIUS_M));
  expect(distanceM(52.5, 13.4, 52.5, 13.4, EARTH_MEAN_RADIUS_M)).toBe(0);
});
