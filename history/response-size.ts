/**
 * The encoded size of a Position, in the encoding the caller reads, without encoding it: GetTrack
 * and Replay fit each answer to the message limit (GATEWAY_MAX_MESSAGE_BYTES, connect-node's
 * writeMaxBytes and the native path's), and encoding 10,000 points to measure them cost ~35 ms
 * (binary) and ~57 ms (JSON) where this costs a fraction. It is an upper bound, a few bytes above
 * the real size per point (history/response-size.test.ts holds it to protobuf-es's encoders).
 */
import type { StoredPoint } from "./read-positions";

export type Encoding = "binary" | "json";

/** The encoding of a call's messages from its content type: Connect, gRPC and gRPC-Web, `+json` or JSON. */
export function encodingOf(contentType: string | null): Encoding {
  return contentType !== null && /json/i.test(contentType) ? "json" : "binary";
}

/** Bytes a message around the points may add (total_points, the JSON braces): kept free of the limit. */
export const RESPONSE_OVERHEAD_BYTES = 64;

const varintLen = (n: number) =>
  n < 0
    ? 10
    : n < 0x80
      ? 1
      : n < 0x4000
        ? 2
        : n < 0x200000
          ? 3
          : n < 0x10000000
            ? 4
            : n < 2 ** 35
              ? 5
              : n < 2 ** 42
                ? 6
                : n < 2 ** 49
                  ? 7
                  : 8;

/** A Timestamp field of µs: tag, length and the message of seconds and nanos. */
function timestampBytes(us: number): number {
  const seconds = Math.floor(us / 1e6);
  const nanos = (us - seconds * 1e6) * 1000;
  const inner = (seconds !== 0 ? 1 + varintLen(seconds) : 0) + (nanos !== 0 ? 1 + varintLen(nanos) : 0);
  return 1 + varintLen(inner) + inner;
}

/** A JSON number as protobuf-es writes it (non-finite ones as quoted strings). */
const jsonNumberLen = (x: number) => (Number.isFinite(x) ? String(x).length : 11);

/** A Timestamp of µs in JSON: quoted RFC 3339, with 0, 3, 6 or 9 digits of fraction as protobuf-es writes it. */
function jsonTimeLen(us: number): number {
  const micros = ((us % 1e6) + 1e6) % 1e6;
  return 22 + (micros === 0 ? 0 : micros % 1000 === 0 ? 4 : 7);
}
/** A VehicleStatus name in quotes (VEHICLE_STATUS_ON_DELIVERY is the longest), or a number. */
const JSON_STATUS = 30;

/**
 * A function giving the bytes one point adds to a `repeated Position` field of an answer in
 * `encoding` (its tag and length included). Id strings repeat across points: their sizes are
 * remembered.
 */
export function createPointSizer(encoding: Encoding): (p: StoredPoint) => number {
  const strings = new Map<string, number>();
  const stringBytes = (s: string) => {
    let n = strings.get(s);
    if (n === undefined) {
      const utf8 = Buffer.byteLength(s);
      n = encoding === "json" ? Buffer.byteLength(JSON.stringify(s)) : s === "" ? 0 : 1 + varintLen(utf8) + utf8;
      if (strings.size < 10_000) strings.set(s, n);
    }
    return n;
  };
  if (encoding === "json") {
    // Fields at their zero value are left out, as protobuf-es does; each present one is `"key":value`.
    return (p) => {
      let n = 3; // { } and the comma before the next point
      let fields = 0;
      const add = (keyLen: number, valueLen: number) => {
        n += keyLen + 3 + valueLen;
        fields++;
      };
      if (p.vehicleId !== "") add(9, stringBytes(p.vehicleId));
      if (p.seq !== 0) add(3, String(p.seq).length);
      add(10, jsonTimeLen(p.us));
      if (!Object.is(p.lat, 0)) add(3, jsonNumberLen(p.lat));
      if (!Object.is(p.lon, 0)) add(3, jsonNumberLen(p.lon));
      if (!Object.is(p.speed, 0)) add(5, jsonNumberLen(p.speed));
      if (!Object.is(p.heading, 0)) add(7, jsonNumberLen(p.heading));
      if (!Object.is(p.accuracy, 0)) add(8, jsonNumberLen(p.accuracy));
      if (p.orderId !== "") add(7, stringBytes(p.orderId));
      if (p.status !== 0) add(6, JSON_STATUS);
      if (p.fleetId !== "") add(7, stringBytes(p.fleetId));
      if (p.receivedUs) add(10, jsonTimeLen(p.receivedUs));
      return n + fields - 1;
    };
  }
  return (p) => {
    const inner =
      stringBytes(p.vehicleId) +
      (p.seq !== 0 ? 1 + varintLen(p.seq) : 0) +
      timestampBytes(p.us) +
      9 * 2 + // lat, lon: double
      5 * 3 + // speed, heading, accuracy: float
      stringBytes(p.orderId) +
      (p.status !== 0 ? 1 + varintLen(p.status) : 0) +
      stringBytes(p.fleetId) +
      (p.receivedUs ? timestampBytes(p.receivedUs) : 0);
    return 1 + varintLen(inner) + inner;
  };
}
