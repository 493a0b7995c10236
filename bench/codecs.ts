/**
 * `bun run bench codecs`: each hand protobuf codec next to the same decode or encode written with
 * protobuf-es's own wire primitives (`BinaryReader`/`BinaryWriter` from `@bufbuild/protobuf/wire`,
 * what protoc-gen-es's generated code did before reflection) and next to reflective
 * `fromBinary`/`toBinary`. Each library version is checked to give the hand codec's result before
 * it is timed. Figures: ns per point (per ack for the ack encoder), median of 7 rounds, in one
 * process on this machine; lib/wire/README.md keeps the current table and what follows from it.
 */
import { parseArgs } from "node:util";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { SyncResponseSchema, UploadRequestSchema, type IngestAck } from "../gen/fleet/v1/ingest_pb";
import { PositionBatchSchema, PositionSchema, type Position } from "../gen/fleet/v1/position_pb";
import { ackResponseEncoder } from "../gateway/ack-encoder";
import { createDurableSeqs, learnBatch } from "../gateway/durable-seqs";
import { pointRequestDecoder } from "../gateway/point-decoder";
import { encodePositionBatch } from "../gateway/position-encoder";
import { decodeBatchRows } from "../history/batch-decoder";
import { rowsOf, type Row } from "../history/row";

export const CODECS_HELP = `bun run bench codecs [--rounds N] [--points N]

Each hand codec (lib/wire/README.md) against protobuf-es's BinaryReader/BinaryWriter doing the same
decode or encode, and against reflective fromBinary/toBinary. CPU only, no servers.
  --rounds N   timed rounds per codec, the median is shown (default 7)
  --points N   positions per batch (default 100)
`;

const ts = (seconds: number, nanos: number): Timestamp => ({ $typeName: "google.protobuf.Timestamp", seconds: BigInt(seconds), nanos });

function samplePositions(n: number): Position[] {
  const out: Position[] = [];
  for (let i = 0; i < n; i++) {
    out.push(
      create(PositionSchema, {
        vehicleId: `veh-${String(i % 20).padStart(5, "0")}`,
        seq: 1_000 + i,
        recordedAt: ts(1_780_000_000 + i, (i * 1_000_003) % 1_000_000_000),
        lat: 52.37 + i * 1e-5,
        lon: 4.89 - i * 1e-5,
        speed: 12.5,
        heading: (i * 7) % 360,
        accuracy: 5,
        orderId: i % 3 === 0 ? "" : `order-${i % 7}`,
        status: i % 4,
        fleetId: "fleet-a",
        receivedAt: ts(1_780_000_000 + i, 500_000_000),
      }),
    );
  }
  return out;
}

// ---- BinaryReader versions ----

function readTimestamp(r: BinaryReader): Timestamp {
  const end = r.uint32() + r.pos;
  let seconds = 0n;
  let nanos = 0;
  while (r.pos < end) {
    const [no, wt] = r.tag();
    if (no === 1) seconds = BigInt(r.int64());
    else if (no === 2) nanos = r.int32();
    else r.skip(wt, no);
  }
  return ts(Number(seconds), nanos);
}

/** One Position with BinaryReader, into the object protobuf-es makes. */
function readPosition(r: BinaryReader, end: number): Position {
  const p: Position = {
    $typeName: "fleet.v1.Position",
    vehicleId: "",
    seq: 0,
    lat: 0,
    lon: 0,
    speed: 0,
    heading: 0,
    accuracy: 0,
    orderId: "",
    status: 0,
    fleetId: "",
  };
  while (r.pos < end) {
    const [no, wt] = r.tag();
    switch (no) {
      case 1:
        p.vehicleId = r.string();
        break;
      case 2:
        p.seq = Number(r.uint64());
        break;
      case 3:
        p.recordedAt = readTimestamp(r);
        break;
      case 4:
        p.lat = r.double();
        break;
      case 5:
        p.lon = r.double();
        break;
      case 6:
        p.speed = r.float();
        break;
      case 7:
        p.heading = r.float();
        break;
      case 8:
        p.accuracy = r.float();
        break;
      case 9:
        p.orderId = r.string();
        break;
      case 10:
        p.status = r.int32();
        break;
      case 11:
        p.fleetId = r.string();
        break;
      case 12:
        p.receivedAt = readTimestamp(r);
        break;
      default:
        r.skip(wt, no);
    }
  }
  return p;
}

function readerPointRequest(bytes: Uint8Array) {
  const r = new BinaryReader(bytes);
  let position: Position | undefined;
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    if (no === 1 && wt === WireType.LengthDelimited) {
      const end = r.uint32() + r.pos;
      position = readPosition(r, end);
    } else r.skip(wt, no);
  }
  return { $typeName: "fleet.v1.UploadRequest", position };
}

const micros = (t: Timestamp | undefined) => (t ? Number(t.seconds) * 1_000_000 + Math.floor(t.nanos / 1000) : NaN);

function readerBatchRows(bytes: Uint8Array): Row[] {
  const r = new BinaryReader(bytes);
  const rows: Row[] = [];
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    if (no !== 1) {
      r.skip(wt, no);
      continue;
    }
    const p = readPosition(r, r.uint32() + r.pos);
    rows.push({
      vehicleId: p.vehicleId,
      us: micros(p.recordedAt),
      seq: p.seq,
      fleetId: p.fleetId,
      lat: p.lat,
      lon: p.lon,
      speed: p.speed,
      heading: p.heading,
      accuracy: p.accuracy,
      orderId: p.orderId,
      status: p.status,
      receivedUs: micros(p.receivedAt),
    });
  }
  return rows;
}

// ---- BinaryWriter versions ----

function writerAck(ack: IngestAck): Uint8Array {
  const w = new BinaryWriter();
  w.tag(1, WireType.LengthDelimited).fork();
  if (ack.vehicleId !== "") w.tag(1, WireType.LengthDelimited).string(ack.vehicleId);
  if (ack.durableSeq !== 0) w.tag(2, WireType.Varint).uint64(ack.durableSeq);
  if (ack.accepted !== 0) w.tag(3, WireType.Varint).uint32(ack.accepted);
  w.join();
  return w.finish();
}

// ---- timing ----

let sink = 0;
/** ns per item of `fn` (which handles `items` items a call): the median of `rounds` timed rounds. */
function time(fn: () => unknown, items: number, rounds: number): number {
  const per: number[] = [];
  let calls = 1;
  // Calibrate to ~40 ms a round, after a warm-up.
  for (let t0 = performance.now(); performance.now() - t0 < 50; ) fn();
  for (;;) {
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) fn();
    if (performance.now() - t0 > 40) break;
    calls *= 2;
  }
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) sink ^= (fn() as { length?: number })?.length ?? 1;
    per.push(((performance.now() - t0) * 1e6) / (calls * items));
  }
  per.sort((a, b) => a - b);
  return per[Math.floor(per.length / 2)]!;
}

function same(what: string, a: unknown, b: unknown): void {
  const norm = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? `${x}n` : Number.isNaN(x) ? "NaN" : x));
  if (norm(a) !== norm(b)) throw new Error(`bench codecs: the library version of ${what} does not give the hand codec's result`);
}

export async function runCodecsBench(argv: string[]): Promise<unknown> {
  const { values } = parseArgs({
    args: argv,
    options: { rounds: { type: "string", default: "7" }, points: { type: "string", default: "100" } },
  });
  const rounds = Number(values.rounds);
  const points = Number(values.points);
  if (!(rounds >= 1) || !(points >= 1)) throw new Error("--rounds and --points take a positive number");

  const positions = samplePositions(points);
  const batch = toBinary(PositionBatchSchema, create(PositionBatchSchema, { positions }));
  const requests = positions.map((position) => toBinary(UploadRequestSchema, create(UploadRequestSchema, { position })));
  const requestBuffers = requests.map((b) => Buffer.from(b));
  const acks = positions.map((p, i) =>
    create(SyncResponseSchema, { ack: { vehicleId: p.vehicleId, durableSeq: p.seq, accepted: 1 + (i % 3) } }),
  );
  const hand = pointRequestDecoder(UploadRequestSchema);
  const handAck = ackResponseEncoder(SyncResponseSchema);

  // The library versions give what the hand codecs give, or the figures mean nothing.
  same(
    "the point request decoder",
    requestBuffers.map((b) => hand(b, 0, b.length)),
    requests.map((b) => readerPointRequest(b)),
  );
  same(
    "the point request decoder (fromBinary)",
    requestBuffers.map((b) => hand(b, 0, b.length)),
    requests.map((b) => fromBinary(UploadRequestSchema, b)),
  );
  same("the batch decoder", decodeBatchRows(batch), readerBatchRows(batch));
  const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
  same("the batch encoder (toBinary)", hex(encodePositionBatch(positions)), hex(batch));
  same(
    "the ack encoder",
    acks.map((a) => hex(handAck(a))),
    acks.map((a) => hex(writerAck(a.ack!))),
  );

  const rows: { codec: string; hand: number; reader: number; reflective: number }[] = [];
  const each =
    <T>(list: T[], fn: (x: T) => unknown) =>
    () => {
      let n = 0;
      for (const x of list) n += (fn(x) as { length?: number })?.length ?? 1;
      return n;
    };
  const measure = (codec: string, h: () => unknown, lib: () => unknown, refl: () => unknown, items: number) => {
    rows.push({ codec, hand: time(h, items, rounds), reader: time(lib, items, rounds), reflective: time(refl, items, rounds) });
    process.stdout.write(`  measured ${codec}\n`);
  };
  measure(
    "point request decode (gateway)",
    each(requestBuffers, (b) => hand(b, 0, b.length)),
    each(requests, (b) => readerPointRequest(b)),
    each(requests, (b) => fromBinary(UploadRequestSchema, b)),
    points,
  );
  measure(
    "batch decode to rows (history)",
    () => decodeBatchRows(batch),
    () => readerBatchRows(batch),
    () => rowsOf(fromBinary(PositionBatchSchema, batch).positions),
    points,
  );
  // The gateway's stream follower: every gateway reads every point to learn durable seqs.
  const seqs = createDurableSeqs({ forgetAfterMs: 300_000 });
  const learnRows = (rs: Row[]) => {
    const now = Date.now();
    for (const r of rs) seqs.learn(r.vehicleId, r.seq, now, Math.floor(r.us / 1000));
    return rs.length;
  };
  measure(
    "stream follower learn (gateway)",
    () => learnBatch(seqs, batch),
    () => learnRows(readerBatchRows(batch)),
    () => {
      const now = Date.now();
      const ps = fromBinary(PositionBatchSchema, batch).positions;
      for (const p of ps) {
        const t = p.recordedAt;
        seqs.learn(p.vehicleId, p.seq, now, t ? Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6) : 0);
      }
      return ps.length;
    },
    points,
  );
  measure(
    "batch encode (gateway batcher: BinaryWriter now)",
    () => encodePositionBatch(positions),
    // The gateway's encoder is BinaryWriter code now (lib/wire/README.md): both columns run it.
    () => encodePositionBatch(positions),
    () => toBinary(PositionBatchSchema, create(PositionBatchSchema, { positions })),
    points,
  );
  measure(
    "ack encode (gateway)",
    each(acks, (a) => handAck(a)),
    each(acks, (a) => writerAck(a.ack!)),
    each(acks, (a) => toBinary(SyncResponseSchema, create(SyncResponseSchema, a))),
    points,
  );

  const f = (n: number) => n.toFixed(0).padStart(8);
  process.stdout.write(`\nns per point (per ack), median of ${rounds} rounds, batches of ${points}\n`);
  process.stdout.write(`${"codec".padEnd(32)}     hand  BinaryR/W  reflective  BinaryR/W ÷ hand\n`);
  for (const r of rows)
    process.stdout.write(
      `${r.codec.padEnd(32)} ${f(r.hand)}   ${f(r.reader)}    ${f(r.reflective)}   ${(r.reader / r.hand).toFixed(2).padStart(8)}\n`,
    );
  const result = {
    bench: "codecs",
    rounds,
    points,
    codecs: rows.map((r) => ({ ...r, hand: +r.hand.toFixed(1), reader: +r.reader.toFixed(1), reflective: +r.reflective.toFixed(1) })),
    sink,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  return result;
}
