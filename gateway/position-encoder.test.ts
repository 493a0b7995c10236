import { describe, expect, test } from "bun:test";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PositionBatchSchema, PositionSchema, VehicleStatus, type Position } from "../gen/fleet/v1/position_pb";
import { encodePositionBatch } from "./position-encoder";

const pos = (init: MessageInitShape<typeof PositionSchema>) => create(PositionSchema, init);
const expected = (positions: Position[]) => toBinary(PositionBatchSchema, create(PositionBatchSchema, { positions }));

const cases: [string, Position[]][] = [
  ["no positions", []],
  [
    "a typical accepted point",
    [
      pos({
        vehicleId: "v-1",
        seq: 9,
        recordedAt: timestampFromMs(1_763_000_000_123),
        lat: 52.5,
        lon: 13.4,
        speed: 12.5,
        heading: 90,
        accuracy: 5,
        fleetId: "north",
        receivedAt: timestampFromMs(1_763_000_000_456),
      }),
    ],
  ],
  [
    "every field, extreme values",
    [
      pos({
        vehicleId: "v",
        seq: 4_294_967_295,
        recordedAt: { seconds: 0n, nanos: 999_999_999 },
        lat: -90,
        lon: 180,
        speed: 1e-30,
        heading: 359.99,
        accuracy: 3.4e38,
        orderId: "o-1",
        status: VehicleStatus.OFFLINE,
        fleetId: "f",
        receivedAt: { seconds: 1n, nanos: 0 },
      }),
    ],
  ],
  ["an empty position and empty timestamps", [pos({}), pos({ recordedAt: { seconds: 0n, nanos: 0 } })]],
  ["NaN, infinities and negative zero", [pos({ vehicleId: "v", lat: NaN, lon: -0, speed: Infinity, heading: -Infinity, accuracy: NaN })]],
  ["non-ASCII and long text (two-byte lengths)", [pos({ vehicleId: "véhicule-ü-🚚", orderId: "x".repeat(300), fleetId: "flotte-é" })]],
  ["negative status and negative nanos", [pos({ vehicleId: "v", status: -3 as VehicleStatus, recordedAt: { seconds: 5n, nanos: -1 } })]],
  [
    "a negative and a huge time (encoded by toBinary)",
    [
      pos({ vehicleId: "a", recordedAt: { seconds: -5n, nanos: 0 } }),
      pos({ vehicleId: "b", receivedAt: { seconds: 2n ** 60n, nanos: 1 } }),
    ],
  ],
];

describe("position encoder", () => {
  for (const [name, positions] of cases) {
    test(`position encoder - ${name}: the bytes toBinary writes`, () => {
      expect(Buffer.from(encodePositionBatch(positions)).equals(Buffer.from(expected(positions)))).toBe(true);
    });
  }

  test("position encoder - unknown fields are written back, as toBinary writes them", () => {
    const p = pos({ vehicleId: "v", seq: 1 });
    p.$unknown = [{ no: 20, wireType: 0, data: new Uint8Array([5]) }];
    expect(Buffer.from(encodePositionBatch([p])).equals(Buffer.from(expected([p])))).toBe(true);
  });

  test("position encoder - a large batch grows the buffer, and a result is not changed by the next batch", () => {
    const many = Array.from({ length: 5000 }, (_, i) =>
      pos({
        vehicleId: `vehicle-${i}`,
        seq: i + 1,
        recordedAt: timestampFromMs(1_700_000_000_000 + i),
        lat: i / 100,
        lon: -i / 100,
        speed: i % 40,
        orderId: i % 7 ? "" : `order-${i}`,
      }),
    );
    const first = encodePositionBatch(many);
    const copy = Buffer.from(first);
    expect(copy.equals(Buffer.from(expected(many)))).toBe(true);
    encodePositionBatch([pos({ vehicleId: "other", seq: 1 })]);
    expect(Buffer.from(first).equals(copy)).toBe(true);
  });
});
