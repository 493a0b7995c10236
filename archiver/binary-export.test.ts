import { expect, test } from "bun:test";
import { PositionCopyReader } from "./binary-export";
import { plainParquet } from "./plain-parquet";

const PG_EPOCH_MS = 946_684_800_000;

/** One field of a binary COPY row: i32 length, then the bytes (-1: NULL). */
const field = (bytes: Buffer | null) => (bytes ? Buffer.concat([int32(bytes.length), bytes]) : int32(-1));
const int32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(v);
  return b;
};
const be = (size: number, write: (b: Buffer) => void) => {
  const b = Buffer.alloc(size);
  write(b);
  return b;
};
const timestamp = (ms: number) => be(8, (b) => b.writeBigInt64BE(BigInt(ms - PG_EPOCH_MS) * 1000n));

function row(id: string, recordedMs: number, seq: bigint, lat: number, speed: number, order: string, receivedMs: number | null): Buffer {
  const fields = [
    field(Buffer.from(id)),
    field(timestamp(recordedMs)),
    field(be(8, (b) => b.writeBigInt64BE(seq))),
    field(Buffer.from("fleet-a")),
    field(be(8, (b) => b.writeDoubleBE(lat))),
    field(be(8, (b) => b.writeDoubleBE(-lat))),
    field(be(4, (b) => b.writeFloatBE(speed))),
    field(be(4, (b) => b.writeFloatBE(90.125))),
    field(be(4, (b) => b.writeFloatBE(5))),
    field(Buffer.from(order)),
    field(be(2, (b) => b.writeInt16BE(3))),
    field(receivedMs === null ? null : timestamp(receivedMs)),
  ];
  return Buffer.concat([be(2, (b) => b.writeInt16BE(fields.length)), ...fields]);
}

const header = Buffer.concat([Buffer.from("PGCOPY\n\xff\r\n\0", "latin1"), int32(0), int32(0)]);
const trailer = be(2, (b) => b.writeInt16BE(-1));
const stream = Buffer.concat([
  header,
  row("v1", Date.parse("2026-10-01T08:00:00.123Z"), 1n, 52.5, 12.5, "", null),
  row("v2", Date.parse("1969-12-31T23:59:59.001Z"), 2n ** 40n, -33.8688, 0.125, "o-".repeat(50), Date.parse("2026-10-01T08:00:01Z")),
  row("v3", Date.parse("2026-10-01T08:00:02Z"), 3n, 0, 0, "Zürich", null),
  trailer,
]);

test("binary export - rows split anywhere over chunks read as when whole", () => {
  const whole = new PositionCopyReader();
  whole.push(stream);
  expect(whole.ended).toBe(true);
  expect(whole.rows).toBe(3);
  const bytes = new PositionCopyReader();
  for (let i = 0; i < stream.length; i++) bytes.push(stream.subarray(i, i + 1));
  expect(bytes.ended).toBe(true);
  expect(bytes.pending).toBe(0);
  expect(Buffer.concat(plainParquet(bytes.columns.columns(), 3))).toEqual(Buffer.concat(plainParquet(whole.columns.columns(), 3)));

  const cols = Object.fromEntries(whole.columns.columns().map((c) => [c.name, c]));
  expect([0, 8, 16].map((o) => cols.recorded_at!.values.readBigInt64LE(o))).toEqual([
    BigInt(Date.parse("2026-10-01T08:00:00.123Z")) * 1000n,
    BigInt(Date.parse("1969-12-31T23:59:59.001Z")) * 1000n,
    BigInt(Date.parse("2026-10-01T08:00:02Z")) * 1000n,
  ]);
  expect([0, 8, 16].map((o) => cols.seq!.values.readBigInt64LE(o))).toEqual([1n, 2n ** 40n, 3n]);
  // PostgreSQL's round() of float8 takes halves to even: 0.125 m/s is 12.5 cm/s → 12, 90.125° → 9012.
  expect([0, 4, 8].map((o) => cols.lat_e7!.values.readInt32LE(o))).toEqual([525000000, -338688000, 0]);
  expect([0, 4, 8].map((o) => cols.speed_cm_s!.values.readInt32LE(o))).toEqual([1250, 12, 0]);
  expect(cols.heading_cdeg!.values.readInt32LE(0)).toBe(9012);
  expect([...cols.received_at!.defined!]).toEqual([0, 1, 0]);
  expect(cols.received_at!.values.length).toBe(8);
});

test("binary export - a stream that is not binary COPY, or goes on after its trailer, is refused", () => {
  expect(() => new PositionCopyReader().push(Buffer.from("vehicle,2026-10-01,1\n"))).toThrow("not a binary COPY stream");
  expect(() => new PositionCopyReader().push(Buffer.concat([stream, trailer]))).toThrow("continues after its trailer");
});
