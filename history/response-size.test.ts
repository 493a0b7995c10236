import { expect, test } from "bun:test";
import { create, toBinary, toJsonString } from "@bufbuild/protobuf";
import { HistoryService } from "../gen/fleet/v1/history_pb";
import { toPosition } from "./history-service";
import type { StoredPoint } from "./read-positions";
import { createPointSizer, encodingOf, RESPONSE_OVERHEAD_BYTES } from "./response-size";

const base: StoredPoint = {
  vehicleId: "truck-42",
  fleetId: "fleet-a",
  orderId: "o-1",
  us: Date.UTC(2026, 10, 19, 14) * 1000 + 123_456,
  seq: 1,
  lat: 52.5,
  lon: 13.4,
  speed: 11.3,
  heading: 90.5,
  accuracy: 5,
  status: 3,
  receivedUs: Date.UTC(2026, 10, 19, 14) * 1000 + 900_001,
};

const hard: StoredPoint[] = [
  base,
  { ...base, vehicleId: "fahrzeug-ü-京", fleetId: "", orderId: "", status: 0, receivedUs: 0, seq: 4_000_000_000 },
  { ...base, vehicleId: 'quote"back\\slash', lat: -89.999999999999, lon: -179.123456789012, speed: 0.1, heading: 359.99, accuracy: 0 },
  { ...base, us: -1_500_000, lat: 0, lon: 0, speed: 0, heading: 0, status: 99 },
  { ...base, us: Date.UTC(2200, 0, 1) * 1000 + 999_999, speed: 1e-7, heading: 1 / 3 },
];

test("response size - the bound is at least the real size, in binary and JSON, and close to it", () => {
  for (const encoding of ["binary", "json"] as const) {
    const size = createPointSizer(encoding);
    const points = Array.from({ length: 2000 }, (_, i) => ({
      ...hard[i % hard.length]!,
      seq: hard[i % hard.length]!.seq + i,
      lat: hard[i % hard.length]!.lat + i * 1e-7,
    }));
    const msg = create(HistoryService.method.getTrack.output, { points: points.map(toPosition), totalPoints: 123_456_789n });
    const real =
      encoding === "json"
        ? Buffer.byteLength(toJsonString(HistoryService.method.getTrack.output, msg))
        : toBinary(HistoryService.method.getTrack.output, msg).length;
    const bound = points.reduce((n, p) => n + size(p), RESPONSE_OVERHEAD_BYTES);
    expect(bound).toBeGreaterThanOrEqual(real);
    expect(bound).toBeLessThan(real * 1.1);
    for (const p of hard) {
      const one = create(HistoryService.method.replay.output, { positions: [toPosition(p)] });
      const realOne =
        encoding === "json"
          ? Buffer.byteLength(toJsonString(HistoryService.method.replay.output, one))
          : toBinary(HistoryService.method.replay.output, one).length;
      expect(size(p) + RESPONSE_OVERHEAD_BYTES).toBeGreaterThanOrEqual(realOne);
    }
  }
});

test("response size - the encoding follows the content type", () => {
  expect(encodingOf("application/grpc")).toBe("binary");
  expect(encodingOf("application/grpc+proto")).toBe("binary");
  expect(encodingOf("application/proto")).toBe("binary");
  expect(encodingOf("application/json")).toBe("json");
  expect(encodingOf("application/connect+json")).toBe("json");
  expect(encodingOf("application/grpc-web+json")).toBe("json");
  expect(encodingOf(null)).toBe("binary");
});
