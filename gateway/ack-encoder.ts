/**
 * Encodes the ack responses (SyncResponse, UploadResponse: one IngestAck) by hand for the native
 * gRPC path. In the steady state each point is acked on its own, so an ack is encoded per point,
 * and protobuf-es's reflective `create` + `toBinary` (a BinaryWriter with its chunk arrays per
 * message) was garbage per point for the collector to chase among 10,000 open streams' objects.
 * It writes exactly what `toBinary` writes (checked in ack-encoder.test.ts); an ack that refuses
 * points (rare) is encoded by `toBinary` itself.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import type { SyncResponseSchema, UploadResponseSchema, IngestAck } from "../gen/fleet/v1/ingest_pb";
import type { MessageEncoder } from "../lib/grpc";
import { varintSize, writeVarint } from "../lib/wire";

type AckResponseSchema = typeof SyncResponseSchema | typeof UploadResponseSchema;

/** Reused from ack to ack: the native path copies the bytes into their frame at once. */
let scratch = Buffer.allocUnsafe(256);

/**
 * An encoder of `schema` (SyncResponse or UploadResponse) for the native path. The bytes it
 * returns are valid until its next call.
 */
export function ackResponseEncoder(schema: AckResponseSchema): MessageEncoder<{ ack?: IngestAck }> {
  return (message) => {
    const ack = message.ack;
    if (!ack || ack.rejected.length > 0 || (ack.$unknown?.length ?? 0) > 0) {
      return toBinary(schema, create(schema, message as never));
    }
    const { vehicleId, durableSeq, accepted } = ack;
    const idBytes = vehicleId === "" ? 0 : Buffer.byteLength(vehicleId, "utf8");
    const ackLen =
      (idBytes > 0 ? 1 + varintSize(idBytes) + idBytes : 0) +
      (durableSeq !== 0 ? 1 + varintSize(durableSeq) : 0) +
      (accepted !== 0 ? 1 + varintSize(accepted) : 0);
    const total = 1 + varintSize(ackLen) + ackLen;
    if (scratch.length < total) scratch = Buffer.allocUnsafe(total * 2);
    const buf = scratch;
    // Field 1 (ack), length-delimited; then IngestAck's fields in number order, zeros left out.
    buf[0] = 0x0a;
    let pos = writeVarint(buf, 1, ackLen);
    if (idBytes > 0) {
      buf[pos++] = 0x0a;
      pos = writeVarint(buf, pos, idBytes);
      pos += buf.write(vehicleId, pos, "utf8");
    }
    if (durableSeq !== 0) {
      buf[pos++] = 0x10;
      pos = writeVarint(buf, pos, durableSeq);
    }
    if (accepted !== 0) {
      buf[pos++] = 0x18;
      pos = writeVarint(buf, pos, accepted);
    }
    return buf.subarray(0, pos);
  };
}
