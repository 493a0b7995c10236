import { expect, test } from "bun:test";
import { findStops, trackRange } from "./map-track";

const at = (min: number, lat: number, lon = 13.4) => ({ lat, lon, atMs: Date.UTC(2026, 11, 6, 12, min) });

test("map track - a pause of minutes within 30 m is a stop; a traffic light is not", () => {
  const track = [
    at(0, 52.5),
    at(1, 52.501),
    // parked 5 minutes, GPS wandering ~5 m
    at(2, 52.502),
    at(4, 52.50203),
    at(7, 52.50198),
    at(8, 52.504),
    // 30 s at a light
    at(9, 52.506),
    { ...at(9, 52.506), atMs: at(9, 52.506).atMs + 30_000 },
    at(10, 52.508),
  ];
  const stops = findStops(track);
  expect(stops).toHaveLength(1);
  expect(stops[0]).toMatchObject({ lat: 52.502, fromMs: at(2, 0).atMs, toMs: at(7, 0).atMs });
  expect(findStops([])).toEqual([]);
});

test("map track - ranges: minutes and hours back from now, or one UTC day (an archived one replays the same way)", () => {
  const now = Date.UTC(2026, 11, 7, 12);
  expect(trackRange("15m", now)).toEqual({ fromMs: now - 900_000, toMs: now });
  expect(trackRange("6h", now)).toEqual({ fromMs: now - 6 * 3_600_000, toMs: now });
  expect(trackRange("2026-12-06", now)).toEqual({ fromMs: Date.UTC(2026, 11, 6), toMs: Date.UTC(2026, 11, 7) });
  expect(() => trackRange("yesterday", now)).toThrow("expected 15m, 2h or a day");
});
