import { describe, expect, test } from "bun:test";
import { create } from "@bufbuild/protobuf";
import { AreaSchema } from "../gen/fleet/v1/geo_pb";
import { distanceM, REDIS_EARTH_RADIUS_M } from "../lib/geo";
import { geohashEncode } from "../lib/geohash";
import { InvalidRequestError } from "../lib/grpc";
import { liveCellWildcard } from "../lib/nats";
import { regionSubjects, toRegion } from "./area";

const circle = (lat: number, lon: number, radiusM: number) =>
  create(AreaSchema, { shape: { case: "circle", value: { lat, lon, radiusM } } });
const box = (minLat: number, minLon: number, maxLat: number, maxLon: number) =>
  create(AreaSchema, { shape: { case: "box", value: { minLat, minLon, maxLat, maxLon } } });
const MAX = 200_000;

const refusal = (f: () => unknown) => {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidRequestError);
    return (err as Error).message;
  }
  throw new Error("expected a refusal");
};

describe("area", () => {
  test("circle - contains by distance; radius ≤ 0, NaN, absurdly large and bad centres are refused with a reason", () => {
    const r = toRegion(circle(52.52, 13.405, 1000), MAX);
    expect(r.contains(52.5245, 13.405)).toBe(true); // ~500 m north
    expect(r.contains(52.535, 13.405)).toBe(false); // ~1.7 km
    expect(refusal(() => toRegion(circle(52.52, 13.405, 0), MAX))).toContain("must be above 0");
    expect(refusal(() => toRegion(circle(52.52, 13.405, -5), MAX))).toContain("must be above 0");
    expect(refusal(() => toRegion(circle(52.52, 13.405, Number.NaN), MAX))).toContain("must be above 0");
    expect(refusal(() => toRegion(circle(52.52, 13.405, 1e9), MAX))).toContain("at most 200000 m");
    expect(refusal(() => toRegion(circle(91, 13.405, 10), MAX))).toContain("lat -90..90");
    expect(refusal(() => toRegion(circle(52, Number.POSITIVE_INFINITY, 10), MAX))).toContain("finite");
  });

  test("circle - the bounding-box shortcut agrees with the distance everywhere, edges, poles and the antimeridian included", () => {
    let h = 12345;
    const rnd = () => ((h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) ^ Math.imul(h, 0x297a2d39)) >>> 0) / 4294967296;
    for (const [lat, lon, r] of [
      [48.85, 2.35, 1000],
      [-33.9, 151.2, 50],
      [0, 179.999, 2000],
      [89.95, 10, 5000],
      [-89.99, -170, 300],
      [60, -0.0001, 150_000],
    ] as const) {
      const region = toRegion(circle(lat, lon, r), MAX);
      for (let i = 0; i < 20_000; i++) {
        // Points out to 1.5 radii, half of them within 1% of the edge.
        const angle = rnd() * 2 * Math.PI;
        const f = i % 2 ? 0.99 + rnd() * 0.02 : rnd() * 1.5;
        const dLat = ((f * r) / 111_195) * Math.sin(angle);
        const dLon = ((f * r) / (111_195 * Math.max(1e-3, Math.cos((lat * Math.PI) / 180)))) * Math.cos(angle);
        const la = Math.max(-90, Math.min(90, lat + dLat));
        const lo = ((lon + dLon + 540) % 360) - 180;
        if (region.contains(la, lo) !== distanceM(lat, lon, la, lo, REDIS_EARTH_RADIUS_M) <= r)
          throw new Error(`disagree at ${la},${lo} for circle ${lat},${lon},${r}`);
      }
    }
  });

  test("box - inverted, empty, out-of-range and too large boxes are refused with a reason", () => {
    const r = toRegion(box(52.4, 13.3, 52.6, 13.5), MAX);
    expect(r.contains(52.5, 13.4)).toBe(true);
    expect(r.contains(52.7, 13.4)).toBe(false);
    expect(refusal(() => toRegion(box(52.6, 13.3, 52.4, 13.5), MAX))).toContain("inverted");
    expect(refusal(() => toRegion(box(52.4, 13.5, 52.6, 13.3), MAX))).toContain("antimeridian");
    expect(refusal(() => toRegion(box(52.4, 13.3, 52.4, 13.5), MAX))).toContain("inverted or empty");
    expect(refusal(() => toRegion(box(-95, 13.3, 52.4, 13.5), MAX))).toContain("lat -90..90");
    expect(refusal(() => toRegion(box(0, 0, 10, 181), MAX))).toContain("lon -180..180");
    expect(refusal(() => toRegion(box(40, 0, 60, 30), MAX))).toContain("too large");
    expect(refusal(() => toRegion(create(AreaSchema, {}), MAX))).toContain("area is missing");
    expect(refusal(() => toRegion(undefined, MAX))).toContain("area is missing");
  });

  test("subjects - a 1 km circle takes 6-character cells, a city 5-character ones, a region 3-character ones, beyond that refused", () => {
    const small = regionSubjects(toRegion(circle(52.5, 13.4, 1000), MAX));
    expect(small.length).toBeGreaterThan(1);
    expect(small.every((s) => /^live\.[0-9a-z]{3}\.[0-9a-z]{5}\.[0-9a-z]{6}\.\*$/.test(s))).toBe(true);
    const city = regionSubjects(toRegion(box(52.4, 13.2, 52.6, 13.6), MAX));
    expect(city.length).toBeLessThanOrEqual(64);
    expect(city.every((s) => /^live\.[0-9a-z]{3}\.[0-9a-z]{5}\.>$/.test(s))).toBe(true);
    const region = regionSubjects(toRegion(circle(52.5, 13.4, 150_000), MAX));
    expect(region.every((s) => /^live\.[0-9a-z]{3}\.>$/.test(s))).toBe(true);
    expect(refusal(() => regionSubjects(toRegion(circle(52.5, 13.4, 3_000_000), 1e9)))).toContain("spans more than 256 cells");
  });

  test("cells - a circle near a pole is refused with the reason, never a subscription to live.>", () => {
    const message = refusal(() => regionSubjects(toRegion(circle(89, 0, 200_000), MAX)));
    expect(message).toContain("too near a pole");
    // 85° still fits in cells of ~156 km: bounded, not everything.
    const north = regionSubjects(toRegion(circle(85, 20, 200_000), MAX));
    expect(north.length).toBeLessThanOrEqual(256);
    expect(north).not.toContain("live.>");
  });

  test("cells - a circle across the antimeridian covers both sides of it", () => {
    const subjects = regionSubjects(toRegion(circle(-17, 179.95, 20_000), MAX));
    const covers = (lat: number, lon: number) => [6, 5, 3].some((p) => subjects.includes(liveCellWildcard(geohashEncode(lat, lon, p))));
    expect(covers(-17, -179.9)).toBe(true);
    expect(covers(-17, 179.9)).toBe(true);
    expect(subjects.length).toBeLessThanOrEqual(64);
  });
});
