/**
 * Positions as PostgreSQL COPY input: binary for `positions` itself (the writer's usual path), text
 * for its staging table (times as integer microseconds since the epoch: exact, and turned into
 * timestamptz by the insert). The rows come in key order from row.ts's prepareRows.
 */
import { BINARY_COPY_SIGNATURE, PG_EPOCH_US } from "../lib/storage";
import { ProtoWriter } from "../lib/wire";
import type { Row } from "./row";

/** Columns of the staging table, in COPY order. */
export const STAGING_COLUMNS = "vehicle_id, recorded_us, seq, fleet_id, lat, lon, speed, heading, accuracy, order_id, status, received_us";

// biome-ignore lint/suspicious/noControlCharactersInRegex: U+0000 is what COPY's text format cannot hold.
const SPECIAL = /[\\\t\n\r\u0000]/;

/**
 * Escapes a text value for COPY's text format. U+0000, which PostgreSQL's text cannot hold (the
 * whole batch would be refused, again at every retry), becomes U+FFFD: the gateway refuses such ids,
 * but a fleet from a token or a point published by another way could still carry one.
 */
export function copyText(value: string): string {
  if (!SPECIAL.test(value)) return value;
  // biome-ignore lint/suspicious/noControlCharactersInRegex: as SPECIAL above.
  return value.replace(/[\\\t\n\r\u0000]/g, (c) =>
    c === "\\" ? "\\\\" : c === "\t" ? "\\t" : c === "\n" ? "\\n" : c === "\r" ? "\\r" : "\uFFFD",
  );
}

/** COPY text of the staging table (STAGING_COLUMNS): times as integer microseconds. */
export function stagingText(rows: readonly Row[]): string {
  let text = "";
  for (const p of rows) {
    const received = Number.isNaN(p.receivedUs) ? "\\N" : String(p.receivedUs);
    text +=
      `${copyText(p.vehicleId)}\t${p.us}\t${p.seq}\t${copyText(p.fleetId)}\t${p.lat}\t${p.lon}\t${p.speed}\t${p.heading}\t` +
      `${p.accuracy}\t${copyText(p.orderId)}\t${p.status}\t${received}\n`;
  }
  return text;
}

/** Columns of `positions`, in the order of positionsCopy's fields. */
export const POSITION_COLUMNS = "vehicle_id, recorded_at, seq, fleet_id, lat, lon, speed, heading, accuracy, order_id, status, received_at";

const FIELDS = 12;
const utf8 = new TextEncoder();

/** Values as binary COPY wants them (big-endian, each after its length), on the project's growable buffer. */
class CopyWriter extends ProtoWriter {
  /** A text field: its UTF-8 length, then its bytes (U+0000, which text cannot hold, as U+FFFD). Room for 4 + 3 × length must be there. */
  text(value: string): void {
    const n = value.length;
    const start = this.pos + 4;
    let at = start;
    for (let i = 0; i < n; i++) {
      const c = value.charCodeAt(i);
      if (c === 0 || c >= 0x80) {
        at = start + utf8.encodeInto(value.replaceAll("\u0000", "\uFFFD"), this.buf.subarray(start)).written;
        break;
      }
      this.buf[at++] = c;
    }
    this.buf.writeInt32BE(at - start, this.pos);
    this.pos = at;
  }

  /** An int8 field of a non-negative value below 2^32. Room for each field must be there, as for text. */
  int8(x: number): void {
    this.buf.writeInt32BE(8, this.pos);
    this.buf.writeInt32BE(0, this.pos + 4);
    this.buf.writeUInt32BE(x, this.pos + 8);
    this.pos += 12;
  }

  float8(x: number): void {
    this.buf.writeInt32BE(8, this.pos);
    this.buf.writeDoubleBE(x, this.pos + 4);
    this.pos += 12;
  }

  float4(x: number): void {
    this.buf.writeInt32BE(4, this.pos);
    this.buf.writeFloatBE(x, this.pos + 4);
    this.pos += 8;
  }

  int2(x: number): void {
    this.buf.writeInt32BE(2, this.pos);
    this.buf.writeInt16BE(x, this.pos + 4);
    this.pos += 6;
  }

  /** A NULL field. */
  null(): void {
    this.buf.writeInt32BE(-1, this.pos);
    this.pos += 4;
  }

  /** A timestamptz field of µs since 1970 (exact below 2^53). Room for 12 bytes must be there. */
  time(us: number): void {
    const v = us - PG_EPOCH_US;
    const hi = Math.floor(v / 0x1_0000_0000);
    this.buf.writeInt32BE(8, this.pos);
    this.buf.writeInt32BE(hi, this.pos + 4);
    this.buf.writeUInt32BE(v - hi * 0x1_0000_0000, this.pos + 8);
    this.pos += 12;
  }
}

const copy = new CopyWriter();

/**
 * `positions` rows (POSITION_COLUMNS) as a binary COPY stream: PostgreSQL reads the values' own
 * bytes, where text made this process print every number and time and PostgreSQL parse them again
 * (the text, its timestamps in ISO 8601, was a third of the writer's CPU). Throws a RangeError for a
 * time beyond ±285 years of 1970, where µs are no longer exact as numbers, and for a status no
 * smallint holds, which PostgreSQL refuses in text and binary would wrap.
 */
export function positionsCopy(rows: readonly Row[]): Uint8Array {
  const c = copy;
  c.pos = 0;
  c.ensure(19);
  BINARY_COPY_SIGNATURE.copy(c.buf, 0);
  c.buf.writeInt32BE(0, 11); // flags
  c.buf.writeInt32BE(0, 15); // header extension
  c.pos = 19;
  for (const p of rows) {
    // What PostgreSQL would refuse in text, refused here: binary values would wrap instead.
    if (!(Math.abs(p.us) < 2 ** 53 && (Number.isNaN(p.receivedUs) || Math.abs(p.receivedUs) < 2 ** 53))) {
      throw new RangeError(`a time of vehicle "${p.vehicleId}" seq ${p.seq} is out of range`);
    }
    if (!(p.status >= -32768 && p.status <= 32767)) {
      throw new RangeError(`status ${p.status} of vehicle "${p.vehicleId}" seq ${p.seq} is out of range for type smallint`);
    }
    // The whole row's room at once (UTF-8 takes at most 3 bytes per UTF-16 unit): nothing below moves the buffer.
    c.ensure(2 + 3 * 4 + 3 * (p.vehicleId.length + p.fleetId.length + p.orderId.length) + 12 + 12 + 2 * 12 + 3 * 8 + 6 + 12);
    c.buf.writeInt16BE(FIELDS, c.pos);
    c.pos += 2;
    c.text(p.vehicleId);
    c.time(p.us);
    c.int8(p.seq);
    c.text(p.fleetId);
    c.float8(p.lat);
    c.float8(p.lon);
    c.float4(p.speed);
    c.float4(p.heading);
    c.float4(p.accuracy);
    c.text(p.orderId);
    c.int2(p.status);
    if (Number.isNaN(p.receivedUs)) c.null();
    else c.time(p.receivedUs);
  }
  c.ensure(2);
  c.buf.writeInt16BE(-1, c.pos);
  c.pos += 2;
  // A copy: the COPY is sent after a round trip, and another writer's batch reuses the buffer meanwhile.
  return Buffer.from(c.buf.subarray(0, c.pos)); // a copy (Buffer.slice would be a view)
}
