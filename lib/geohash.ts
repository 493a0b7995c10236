/**
 * Geohash (base32, as Redis GEO and most maps use) for the live fan-out subjects: a position's
 * cell at 5 characters (~4.9 × 4.9 km) names its subject, and an area watch subscribes to the
 * cells that cover its area.
 */

const BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz";

/** The geohash of a point, `precision` characters long. */
export function geohashEncode(lat: number, lon: number, precision = 5): string {
  let latMin = -90,
    latMax = 90,
    lonMin = -180,
    lonMax = 180;
  let out = "";
  let bit = 0,
    ch = 0,
    even = true;
  while (out.length < precision) {
    if (even) {
      const mid = (lonMin + lonMax) / 2;
      if (lon >= mid) {
        ch = (ch << 1) | 1;
        lonMin = mid;
      } else {
        ch <<= 1;
        lonMax = mid;
      }
    } else {
      const mid = (latMin + latMax) / 2;
      if (lat >= mid) {
        ch = (ch << 1) | 1;
        latMin = mid;
      } else {
        ch <<= 1;
        latMax = mid;
      }
    }
    even = !even;
    if (++bit === 5) {
      out += BASE32[ch];
      bit = 0;
      ch = 0;
    }
  }
  return out;
}

/** Whether two points fall in the same geohash cell of `precision` characters (no string made). */
export function geohashSameCell(latA: number, lonA: number, latB: number, lonB: number, precision: number): boolean {
  let latMin = -90,
    latMax = 90,
    lonMin = -180,
    lonMax = 180;
  for (let bit = 0; bit < precision * 5; bit++) {
    if (bit % 2 === 0) {
      const mid = (lonMin + lonMax) / 2;
      const a = lonA >= mid;
      if (a !== lonB >= mid) return false;
      if (a) lonMin = mid;
      else lonMax = mid;
    } else {
      const mid = (latMin + latMax) / 2;
      const a = latA >= mid;
      if (a !== latB >= mid) return false;
      if (a) latMin = mid;
      else latMax = mid;
    }
  }
  return true;
}

/** Size in degrees of one cell at a precision: [lat height, lon width]. */
export function geohashCellSize(precision: number): [number, number] {
  const bits = precision * 5;
  const lonBits = Math.ceil(bits / 2);
  const latBits = Math.floor(bits / 2);
  return [180 / 2 ** latBits, 360 / 2 ** lonBits];
}

/**
 * The cells of `precision` characters that cover a box, or undefined when more than `max` would
 * be needed (the caller then takes a coarser precision).
 */
export function geohashCover(
  box: { minLat: number; minLon: number; maxLat: number; maxLon: number },
  precision: number,
  max: number,
): string[] | undefined {
  const [dLat, dLon] = geohashCellSize(precision);
  // Cell-aligned edges, so that every cell the box touches is visited once.
  const lat0 = Math.floor((box.minLat + 90) / dLat) * dLat - 90;
  const lon0 = Math.floor((box.minLon + 180) / dLon) * dLon - 180;
  const rows = Math.floor((Math.min(box.maxLat, 90 - 1e-9) - lat0) / dLat) + 1;
  const cols = Math.floor((Math.min(box.maxLon, 180 - 1e-9) - lon0) / dLon) + 1;
  if (rows * cols > max) return undefined;
  const cells = new Set<string>();
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      // The centre of the cell, which encodes to that cell without rounding trouble at edges.
      cells.add(geohashEncode(lat0 + (r + 0.5) * dLat, lon0 + (c + 0.5) * dLon, precision));
    }
  }
  return [...cells];
}
