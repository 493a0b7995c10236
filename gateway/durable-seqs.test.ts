import { describe, expect, test } from "bun:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { PositionBatchSchema } from "../gen/fleet/v1/position_pb";
import { createDurableSeqs, learnBatch } from "./durable-seqs";

describe("durable seqs", () => {
  test("durable seqs - a seq read above a hole is not counted until the hole is filled", () => {
    const seqs = createDurableSeqs({ forgetAfterMs: 60_000 });
    for (let seq = 1; seq <= 8; seq++) seqs.learn("v", seq, 1000);
    // Seq 9's batch failed on a dying gateway while seq 10's was stored.
    seqs.learn("v", 10, 1000);
    seqs.learn("v", 11, 1000);
    expect(seqs.resume("v", 1000)).toBe(8);
    const s = seqs.state("v");
    expect(s.holds(10)).toBe(true);
    expect(s.holds(9)).toBe(false);
    seqs.learn("v", 9, 1000);
    expect(seqs.resume("v", 1000)).toBe(11);
    expect(s.held).toBeUndefined();
    expect(s.skipped(9)).toBe(false);
  });

  test("durable seqs - Resume opens the hole: its seq is taken, and the vehicle's own point takes in what was held", () => {
    const seqs = createDurableSeqs({ forgetAfterMs: 60_000 });
    seqs.learn("v", 8, 1000);
    seqs.learn("v", 10, 1000);
    const s = seqs.state("v");
    // Before a Resume a seq missing from the stream is a skipped one, as any gap read there.
    expect(s.accepted).toBe(10);
    expect(s.skipped(9)).toBe(true);
    expect(seqs.resume("v", 1000)).toBe(8);
    expect(s.accepted).toBe(8);
    // As the ingest service and the batcher do with seq 9, once its PubAck came.
    s.accept(9, 5);
    s.durable = 9;
    expect(s.durable).toBe(10);
    expect(s.accepted).toBe(10);
  });

  test("durable seqs - a hole older than the window is a skip", () => {
    const seqs = createDurableSeqs({ forgetAfterMs: 60_000 });
    seqs.learn("v", 8, 1000);
    seqs.learn("v", 10, 1000);
    seqs.learn("v", 12, 30_000);
    expect(seqs.resume("v", 61_000)).toBe(8);
    // The hole at 9 is past the window; the one at 11 is not yet.
    expect(seqs.resume("v", 61_001)).toBe(10);
    const s = seqs.state("v");
    expect(s.skipped(9)).toBe(true);
    expect(seqs.resume("v", 90_001)).toBe(12);
    expect(s.skipped(11)).toBe(true);
  });

  test("durable seqs - a vehicle first read at any seq is durable up to it, and runs merge", () => {
    const seqs = createDurableSeqs({ forgetAfterMs: 60_000 });
    seqs.learn("v", 100, 1000);
    expect(seqs.durableSeq("v")).toBe(100);
    for (const seq of [105, 103, 104, 102]) seqs.learn("v", seq, 1000);
    expect(seqs.state("v").held).toEqual([102, 105, 1000]);
    seqs.learn("v", 101, 1000);
    expect(seqs.durableSeq("v")).toBe(105);
  });
});

describe("learnBatch", () => {
  const batch = (extra?: (w: BinaryWriter) => void) => {
    const bytes = toBinary(
      PositionBatchSchema,
      create(PositionBatchSchema, {
        positions: [
          { vehicleId: "v-1", seq: 1, recordedAt: { seconds: 1_700_000_000n, nanos: 5_000_000 } },
          { vehicleId: "v-2", seq: 4, recordedAt: { seconds: 1_700_000_001n } },
          { vehicleId: "v-1", seq: 2, recordedAt: { seconds: 1_700_000_002n } },
        ],
      }),
    );
    if (!extra) return bytes;
    const w = new BinaryWriter();
    w.raw(bytes);
    extra(w);
    return w.finish();
  };

  test("learnBatch - learns every point with its recorded time, as protobuf-es reads them", () => {
    const seqs = createDurableSeqs({ forgetAfterMs: 60_000 });
    expect(learnBatch(seqs, batch())).toBe(3);
    expect(seqs.durableSeq("v-1")).toBe(2);
    expect(seqs.durableSeq("v-2")).toBe(4);
    expect(seqs.state("v-1").lastTime).toBe(1_700_000_002_000);
  });

  test("learnBatch - a message the hand reader does not cover (an unknown field) is read by protobuf-es", () => {
    const seqs = createDurableSeqs({ forgetAfterMs: 60_000 });
    expect(
      learnBatch(
        seqs,
        batch((w) => w.tag(9, WireType.Varint).uint32(7)),
      ),
    ).toBe(3);
    expect(seqs.durableSeq("v-1")).toBe(2);
    expect(seqs.durableSeq("v-2")).toBe(4);
  });

  test("learnBatch - bytes that are not a PositionBatch throw protobuf-es's error", () => {
    const seqs = createDurableSeqs({ forgetAfterMs: 60_000 });
    expect(() => learnBatch(seqs, new Uint8Array([0x0a, 0x05, 0x01]))).toThrow();
  });
});
