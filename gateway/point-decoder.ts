/**
 * Decodes UploadRequest and SyncRequest (one field: 1 = Position) by hand, for the native gRPC
 * path: protobuf-es's reflective `fromBinary` (with `create`) was a third of the gateway's CPU per
 * point. It covers what vehicles send: each Position field at most once, ASCII text. Anything else
 * (unknown fields, non-ASCII text, repeated fields, large or negative varints, malformed bytes) is
 * handed to `fromBinary`, so the result, or the error, is always protobuf-es's own.
 */
import { fromBinary, type MessageShape } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { SyncRequestSchema, UploadRequestSchema } from "../gen/fleet/v1/ingest_pb";
import type { Position } from "../gen/fleet/v1/position_pb";
import type { MessageDecoder } from "../lib/grpc";
import { readPositionBatch, type PositionFields } from "../lib/wire";

type PointRequestSchema = typeof UploadRequestSchema | typeof SyncRequestSchema;

const timestamp = (seconds: number, nanos: number): Timestamp => ({
  $typeName: "google.protobuf.Timestamp",
  seconds: BigInt(seconds),
  nanos,
});

/** The Position protobuf-es makes of these fields (absent message fields left out, as it leaves them). */
function toPosition(f: PositionFields): Position {
  const text = (start: number, end: number) => (f.bytes as Buffer).toString("latin1", start, end);
  const p: Position = {
    $typeName: "fleet.v1.Position",
    vehicleId: text(f.idStart, f.idEnd),
    seq: f.seq,
    lat: f.lat,
    lon: f.lon,
    speed: f.speed,
    heading: f.heading,
    accuracy: f.accuracy,
    orderId: text(f.orderStart, f.orderEnd),
    status: f.status,
    fleetId: text(f.fleetStart, f.fleetEnd),
  };
  if (f.hasRecorded) p.recordedAt = timestamp(f.recordedSeconds, f.recordedNanos);
  if (f.hasReceived) p.receivedAt = timestamp(f.receivedSeconds, f.receivedNanos);
  return p;
}

/**
 * A decoder of `schema` (UploadRequest or SyncRequest) for `createNativeGrpc`'s streams. Both are
 * one field 1 = Position, as a PositionBatch is a repeated one: lib/wire/position-reader.ts reads them.
 */
export function pointRequestDecoder<S extends PointRequestSchema>(schema: S): MessageDecoder<MessageShape<S>> {
  const typeName = schema.typeName;
  const read: { position: Position | undefined; count: number } = { position: undefined, count: 0 };
  const visit = (f: PositionFields) => {
    // Non-ASCII text is left to fromBinary's UTF-8 decoding.
    read.position = ++read.count === 1 && f.ascii ? toPosition(f) : undefined;
  };
  return (bytes, start, end) => {
    const data = bytes.subarray(start, end);
    read.position = undefined;
    read.count = 0;
    // Two positions (protobuf merges them) or none go to fromBinary too.
    if (readPositionBatch(data, visit) && read.count === 1 && read.position)
      return { $typeName: typeName, position: read.position as Position } as unknown as MessageShape<S>;
    return fromBinary(schema, data) as MessageShape<S>;
  };
}
