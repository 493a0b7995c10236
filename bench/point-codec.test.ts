import { expect, test } from "bun:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { PositionSchema } from "../gen/fleet/v1/position_pb";
import { RejectReason, SyncRequestSchema, SyncResponseSchema } from "../gen/fleet/v1/ingest_pb";
import { encodePosition, maxSyncFrameSize, syncAckDurableSeq, vehicleTemplate, writeSyncFrame } from "./point-codec";

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

test("point-codec - durable_seq of a SyncResponse read by hand as protobuf-es reads it; rejections left to protobuf-es", () => {
  const cases = [
    create(SyncResponseSchema, {}),
    create(SyncResponseSchema, { ack: {} }),
    create(SyncResponseSchema, { ack: { vehicleId: "bench-0-12345", durableSeq: 1, accepted: 1 } }),
    create(SyncResponseSchema, { ack: { vehicleId: "v", durableSeq: 4_000_000_000, accepted: 300 } }),
    create(SyncResponseSchema, { ack: { durableSeq: 128 } }),
  ];
  for (const m of cases) {
    const bytes = toBinary(SyncResponseSchema, m);
    const padded = new Uint8Array(bytes.length + 6);
    padded.set(bytes, 3);
    expect(syncAckDurableSeq(padded, 3, 3 + bytes.length)).toBe(m.ack?.durableSeq ?? 0);
  }
  const refused = toBinary(
    SyncResponseSchema,
    create(SyncResponseSchema, { ack: { durableSeq: 9, rejected: [{ seq: 10, reason: RejectReason.DUPLICATE }] } }),
  );
  expect(syncAckDurableSeq(refused, 0, refused.length)).toBeUndefined();
  const truncated = toBinary(SyncResponseSchema, cases[2]!);
  expect(syncAckDurableSeq(truncated, 0, truncated.length - 1)).toBeUndefined();
});
