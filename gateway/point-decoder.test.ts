import { describe, expect, test } from "bun:test";
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { SyncRequestSchema, UploadRequestSchema } from "../gen/fleet/v1/ingest_pb";
import { PositionSchema, VehicleStatus } from "../gen/fleet/v1/position_pb";
import { pointRequestDecoder } from "./point-decoder";

const uploadDecoder = pointRequestDecoder(UploadRequestSchema);
const syncDecoder = pointRequestDecoder(SyncRequestSchema);
/** Decodes from the middle of a larger buffer, as the stream hands a message over. */
const within =
  <T>(decode: (b: Buffer, s: number, e: number) => T) =>
  (bytes: Uint8Array) =>
    decode(Buffer.concat([Buffer.from([9, 9, 9]), bytes, Buffer.from([7])]), 3, 3 + bytes.length);
const decodeUpload = within(uploadDecoder);
const decodeSync = within(syncDecoder);

const cases: [string, MessageInitShape<typeof PositionSchema> | undefined][] = [
  [
    "a typical point",
    {
      vehicleId: "v-12",
      seq: 7,
      recordedAt: timestampFromMs(1_763_000_000_123),
      lat: 52.52,
      lon: 13.405,
      speed: 12.5,
      heading: 90,
      accuracy: 5,
    },
  ],
  [
    "every field a vehicle sets",
    {
      vehicleId: "van-9",
      seq: 4_294_967_295,
      recordedAt: timestampFromMs(1_000),
      lat: -90,
      lon: 180,
      speed: 0.1,
      heading: 359.9,
      accuracy: 1e-3,
      orderId: "order-1",
      status: VehicleStatus.ON_DELIVERY,
    },
  ],
  ["an empty position", {}],
  ["NaN and infinities", { vehicleId: "v", seq: 1, lat: NaN, lon: -Infinity, speed: Infinity, heading: NaN }],
  ["a non-ASCII id", { vehicleId: "véhicule-ü", seq: 3 }],
  ["fleet and received time from the sender", { vehicleId: "v", seq: 2, fleetId: "forged", receivedAt: timestampFromMs(5) }],
  ["a negative time", { vehicleId: "v", seq: 2, recordedAt: { seconds: -5n, nanos: 0 } }],
  ["a huge time", { vehicleId: "v", seq: 2, recordedAt: { seconds: 2n ** 60n, nanos: 999_999_999 } }],
  ["a negative status", { vehicleId: "v", seq: 2, status: -1 as VehicleStatus }],
  ["no position", undefined],
];

describe("point decoder", () => {
  for (const [name, init] of cases) {
    test(`point decoder - ${name} decodes as fromBinary does`, () => {
      const bytes = toBinary(UploadRequestSchema, create(UploadRequestSchema, { position: init && create(PositionSchema, init) }));
      expect(decodeUpload(bytes)).toStrictEqual(fromBinary(UploadRequestSchema, bytes));
      const sync = toBinary(SyncRequestSchema, create(SyncRequestSchema, { position: init && create(PositionSchema, init) }));
      expect(decodeSync(sync)).toStrictEqual(fromBinary(SyncRequestSchema, sync));
    });
  }

  test("point decoder - unknown fields are kept, as fromBinary keeps them", () => {
    const known = toBinary(
      UploadRequestSchema,
      create(UploadRequestSchema, { position: create(PositionSchema, { vehicleId: "v", seq: 1 }) }),
    );
    // Field 20 (varint 5) appended inside the position: rewrite the outer length.
    const inner = Buffer.concat([Buffer.from(known.subarray(2)), Buffer.from([0xa0, 0x01, 0x05])]);
    const bytes = Buffer.concat([Buffer.from([0x0a, inner.length]), inner]);
    const decoded = decodeUpload(bytes);
    expect(decoded).toStrictEqual(fromBinary(UploadRequestSchema, bytes));
    expect(decoded.position!.$unknown).toHaveLength(1);
  });

  test("point decoder - a repeated field merges as fromBinary merges", () => {
    const a = toBinary(UploadRequestSchema, create(UploadRequestSchema, { position: create(PositionSchema, { vehicleId: "v", seq: 1 }) }));
    const b = toBinary(UploadRequestSchema, create(UploadRequestSchema, { position: create(PositionSchema, { seq: 9, lat: 1 }) }));
    const bytes = Buffer.concat([a, b]);
    expect(decodeUpload(bytes)).toStrictEqual(fromBinary(UploadRequestSchema, bytes));
    expect(decodeUpload(bytes).position!.seq).toBe(9);
  });

  test("point decoder - malformed bytes throw what fromBinary throws", () => {
    for (const bad of [
      [0x0a, 100, 1, 2],
      [0x0a, 3, 0x0a, 9, 0x41],
      [0xff, 0xff, 0xff],
      [0x0a, 2, 0x10],
    ]) {
      const bytes = new Uint8Array(bad);
      const expected = (() => {
        try {
          fromBinary(UploadRequestSchema, bytes);
          return "no error";
        } catch (err) {
          return (err as Error).message;
        }
      })();
      expect(() => decodeUpload(bytes)).toThrow(expected);
    }
  });
});
