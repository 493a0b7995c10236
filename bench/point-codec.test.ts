import { expect, test } from "bun:test";
import { fromBinary } from "@bufbuild/protobuf";
import { PositionSchema } from "../gen/fleet/v1/position_pb";
import { SyncRequestSchema } from "../gen/fleet/v1/ingest_pb";
import { encodePosition, maxSyncFrameSize, vehicleTemplate, writeSyncFrame } from "./point-codec";

const t = vehicleTemplate("bench-0-12345", 48.8566, 2.3522, 13.25, 271, 4);

test("point-codec - position decodes with protobuf-es to the same fields", () => {
  for (const seq of [1, 127, 128, 300_000, 4_000_000_000]) {
    const p = fromBinary(PositionSchema, encodePosition(t, seq, 1_763_740_800_123));
    expect(p.vehicleId).toBe("bench-0-12345");
    expect(p.seq).toBe(seq);
    expect(p.recordedAt?.seconds).toBe(1_763_740_800n);
    expect(p.recordedAt?.nanos).toBe(123_000_000);
    expect(p.lat).toBe(48.8566);
    expect(p.lon).toBe(2.3522);
    expect(p.speed).toBeCloseTo(13.25);
    expect(p.heading).toBeCloseTo(271);
    expect(p.accuracy).toBeCloseTo(4);
  }
});

test("point-codec - sync frames carry the gRPC prefix and decodable SyncRequests", () => {
  const buf = new Uint8Array(maxSyncFrameSize(t) * 2);
  const mid = writeSyncFrame(buf, 0, t, 7, 1_763_740_800_000);
  const end = writeSyncFrame(buf, mid, t, 8, 1_763_740_800_999);
  expect(buf[0]).toBe(0);
  expect(5 + new DataView(buf.buffer).getUint32(1)).toBe(mid);
  const first = fromBinary(SyncRequestSchema, buf.subarray(5, mid));
  expect(first.position?.seq).toBe(7);
  expect(first.position?.recordedAt?.nanos).toBe(0);
  const second = fromBinary(SyncRequestSchema, buf.subarray(mid + 5, end));
  expect(second.position?.seq).toBe(8);
  expect(second.position?.recordedAt?.nanos).toBe(999_000_000);
  expect(end).toBeLessThanOrEqual(buf.length);
});
