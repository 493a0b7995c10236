import { describe, expect, test } from "bun:test";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { IngestAckSchema, RejectReason, SyncResponseSchema, UploadResponseSchema, type IngestAck } from "../gen/fleet/v1/ingest_pb";
import { ackResponseEncoder } from "./ack-encoder";

const ack = (init: MessageInitShape<typeof IngestAckSchema>) => create(IngestAckSchema, init);

const cases: [string, MessageInitShape<typeof SyncResponseSchema>][] = [
  ["a typical ack", { ack: ack({ vehicleId: "truck-9", durableSeq: 1234, accepted: 1 }) }],
  ["the resume ack: nothing durable yet", { ack: ack({ vehicleId: "truck-9" }) }],
  ["an empty ack", { ack: ack({}) }],
  ["no ack at all", {}],
  ["the largest seq and count", { ack: ack({ vehicleId: "v", durableSeq: 4_294_967_295, accepted: 4_294_967_295 }) }],
  ["non-ASCII and long ids (two-byte lengths)", { ack: ack({ vehicleId: "véhicule-ü-🚚".repeat(20), durableSeq: 128, accepted: 127 }) }],
  [
    "refusals (encoded by toBinary)",
    {
      ack: ack({
        vehicleId: "v",
        durableSeq: 3,
        rejected: [{ seq: 4, reason: RejectReason.DUPLICATE, message: "seq 4 is already durable" }],
      }),
    },
  ],
];

describe("ack encoder", () => {
  for (const schema of [SyncResponseSchema, UploadResponseSchema]) {
    const encode = ackResponseEncoder(schema);
    for (const [name, init] of cases) {
      test(`${schema.name} - ${name}: the same bytes as toBinary`, () => {
        const message = create(schema, init);
        expect(Buffer.from(encode(message))).toEqual(Buffer.from(toBinary(schema, message)));
      });
    }
  }

  test("SyncResponse - an ack not made with create (a plain message object) encodes the same", () => {
    const encode = ackResponseEncoder(SyncResponseSchema);
    const plain: IngestAck = { $typeName: "fleet.v1.IngestAck", vehicleId: "truck-1", durableSeq: 77, accepted: 2, rejected: [] };
    const bytes = Buffer.from(encode({ ack: plain }));
    expect(bytes).toEqual(Buffer.from(toBinary(SyncResponseSchema, create(SyncResponseSchema, { ack: plain }))));
  });
});
