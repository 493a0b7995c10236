import { describe, expect, test } from "bun:test";
import { geohashCellSize, geohashCover, geohashEncode, geohashSameCell } from "./geohash";

describe("geohash", () => {
  test("encode - matches known hashes", () => {
    // Reference values from geohash.org and Redis GEOHASH (7.0).
    expect(geohashEncode(57.64911, 10.40744, 11)).toBe("u4pruydqqvj");
    expect(geohashEncode(52.52, 13.405, 5)).toBe("u33dc");
    expect(geohashEncode(-33.8688, 151.2093, 5)).toBe("r3gx2");
  });

  test("cell size - 5 characters are about 0.044 by 0.044 degrees", () => {
    const [dLat, dLon] = geohashCellSize(5);
    expect(dLat).toBeCloseTo(0.0439, 3);
    expect(dLon).toBeCloseTo(0.0439, 3);
  });

  test("cover - holds the cell of every point inside the box", () => {
    const box = { minLat: 52.4, minLon: 13.2, maxLat: 52.6, maxLon: 13.6 };
    const cells = new Set(geohashCover(box, 5, 1000)!);
    for (let i = 0; i < 500; i++) {
      const lat = box.minLat + Math.random() * (box.maxLat - box.minLat);
      const lon = box.minLon + Math.random() * (box.maxLon - box.minLon);
      expect(cells.has(geohashEncode(lat, lon, 5))).toBe(true);
    }
    expect(geohashCover(box, 5, 10)).toBeUndefined();
  });

  test("same cell - agrees with comparing the encoded cells, next to cell edges too", () => {
    const [dLat, dLon] = geohashCellSize(6);
    for (let i = 0; i < 2000; i++) {
      const lat = -80 + Math.random() * 160;
      const lon = -179 + Math.random() * 358;
      // Half the pairs straddle or touch an edge of a cell.
      const edgeLat = i % 2 === 0 ? Math.round((lat + 90) / dLat) * dLat - 90 : lat;
      const edgeLon = i % 4 === 0 ? Math.round((lon + 180) / dLon) * dLon - 180 : lon;
      const lat2 = edgeLat + (Math.random() - 0.5) * 1e-5;
      const lon2 = edgeLon + (Math.random() - 0.5) * 1e-5;
      expect(geohashSameCell(edgeLat, edgeLon, lat2, lon2, 6)).toBe(geohashEncode(edgeLat, edgeLon, 6) === geohashEncode(lat2, lon2, 6));
    }
  });
});
