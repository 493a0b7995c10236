import { describe, expect, test } from "bun:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PositionBatchSchema, PositionSchema, VehicleStatus } from "../gen/fleet/v1/position_pb";
import { PointBlob } from "./point-blob";

const NOW = 1_790_000_000_500;
const decode = (data: Uint8Array) => fromBinary(PositionBatchSchema, data).positions;
const bytesOf = (positions: Parameters<typeof create<typeof PositionSchema>>[1][]) =>
  toBinary(PositionBatchSchema, create(PositionBatchSchema, { positions: positions.map((p) => create(PositionSchema, p)) }));

/** The blob protobuf-es and packPoint make of the same bytes. */
function reference(data: Uint8Array): PointBlob {
  const b = new PointBlob(16);
  for (const p of decode(data)) b.addPosition(p, NOW);
  return b;
}
const used = (b: PointBlob) => Buffer.from(b.buf.subarray(0, b.size));

describe("point blob", () => {
  test("blob - the hand reader writes exactly what protobuf-es and packPoint give, field by field", () => {
    const data = bytesOf([
      {
        vehicleId: "truck-9",
        seq: 4_000_000_000,
        recordedAt: { seconds: 1_790_000_000n, nanos: 123_456_789 },
        lat: 52.123456789,
        lon: -13.4,
        speed: 8.3,
        heading: 271.5,
        accuracy: 4.2,
        orderId: "o-1",
        status: VehicleStatus.ON_DELIVERY,
        fleetId: "north",
        receivedAt: timestampFromMs(1_790_000_000_200),
      },
      // received after the tracker's clock: last seen is the clock; no received_at: the clock too
      {
        vehicleId: "late",
        seq: 1,
        recordedAt: timestampFromMs(0),
        receivedAt: timestampFromMs(NOW + 60_000),
        lat: -90,
        lon: 180,
        status: VehicleStatus.OFFLINE,
      },
      { vehicleId: "no-time", seq: 2, lat: 89.9, speed: Number.NaN, accuracy: 1e9, heading: -3 },
      // ids cut as packPoint cuts them: 64 characters of fleet, 128 of order
      { vehicleId: "long", seq: 3, fleetId: "f".repeat(300), orderId: "o".repeat(500), status: 1234567 as VehicleStatus },
      {},
    ]);
    const b = new PointBlob(16);
    // The hand reader alone: protobuf-es is not asked.
    expect(
      b.addMessage(data, NOW, () => {
        throw new Error("fell back to protobuf-es");
      }),
    ).toBe(5);
    const ref = reference(data);
    expect(used(b).equals(used(ref))).toBe(true);
    expect(b.idAt).toEqual(ref.idAt);
    expect(b.recLen).toEqual(ref.recLen);
    expect(b.id(0)).toBe("truck-9");
  });

  test("blob - unknown fields, a repeated field and text that is not ASCII go through protobuf-es, same bytes", () => {
    const one = bytesOf([{ vehicleId: "v", seq: 1, recordedAt: timestampFromMs(1000), fleetId: "f" }]);
    const inner = one.subarray(2);
    const withUnknown = new Uint8Array([0x0a, inner.length + 2, ...inner, 0x78, 0x07]);
    const twice = new Uint8Array([0x0a, 6, 0x0a, 1, 0x61, 0x0a, 1, 0x62]);
    const utf8 = bytesOf([{ vehicleId: "vélo-ü", seq: 1, fleetId: "nörd", orderId: "😀".repeat(70) }]);
    // seconds < 0: a 10-byte varint the reader leaves to protobuf-es
    const negative = bytesOf([{ vehicleId: "old", seq: 1, recordedAt: { seconds: -5n, nanos: 0 } }]);
    for (const data of [withUnknown, twice, utf8, negative]) {
      const b = new PointBlob(16);
      b.addMessage(data, NOW, decode);
      expect(used(b).equals(used(reference(data)))).toBe(true);
    }
    const b = new PointBlob();
    b.addMessage(twice, NOW, decode);
    expect(b.id(0)).toBe("b");
    const u = new PointBlob();
    u.addMessage(utf8, NOW, decode);
    expect(u.id(0)).toBe("vélo-ü");
  });

  test("blob - bytes that are not a PositionBatch, or a point no record holds, throw and leave the blob as it was", () => {
    const b = new PointBlob(16);
    b.addMessage(bytesOf([{ vehicleId: "a", seq: 1 }]), NOW, decode);
    const before = used(b);
    expect(() => b.addMessage(new Uint8Array([0x0a, 0x50, 0x01]), NOW, decode)).toThrow();
    expect(() =>
      b.addMessage(
        bytesOf([
          { vehicleId: "b", seq: 1 },
          { vehicleId: "c", lat: 1000 },
        ]),
        NOW,
        decode,
      ),
    ).toThrow(RangeError);
    expect(b.count).toBe(1);
    expect(used(b).equals(before)).toBe(true);
    expect(b.idAt.length).toBe(1);
  });

  test("blob - GEOADD's text is exactly the record's coordinates (the same double), latitudes clamped as GEOADD needs", () => {
    const b = new PointBlob(16);
    const coords: [number, number][] = [
      [0, 0],
      [-0.0000001, 0.0000001],
      [85.06, -180],
      [-89.9999999, 179.9999999],
      [52.5200066, 13.404954],
      [-85.05112878, 1e-7],
      [85.0511287, -0.5],
    ];
    for (let i = 0; i < 2000; i++) coords.push([(Math.random() - 0.5) * 180, (Math.random() - 0.5) * 360]);
    b.addMessage(bytesOf(coords.map(([lat, lon], i) => ({ vehicleId: `g${i}`, seq: 1, lat, lon }))), NOW, decode);
    for (let i = 0; i < b.count; i++) {
      const r = b.recAt(i);
      let at = r + b.recLen[i]!;
      const lonText = b.buf.toString("latin1", at + 1, at + 1 + b.buf[at]!);
      at += 1 + b.buf[at]!;
      const latText = b.buf.toString("latin1", at + 1, at + 1 + b.buf[at]!);
      expect(Number(lonText)).toBe(b.buf.readInt32LE(r + 28) / 1e7);
      expect(Number(latText)).toBe(Math.max(-85.05112878, Math.min(85.05112878, b.buf.readInt32LE(r + 24) / 1e7)));
    }
  });
});
