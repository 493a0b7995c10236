/**
 * What `bench watch`'s gRPC watchers read of each watch response, straight from its bytes: every
 * event's kind and its position's recorded_at. The same work the Redis subscribers do with their
 * records (one double), so that the two ways are measured with equally light clients; the load
 * generator of `bench ingest` writes its frames by hand for the same reason. Checked against
 * protobuf-es in watch-codec.test.ts.
 */

/** Reads a varint at `at`; returns [value, offset after it]. Values up to 2^53. */
function varint(b: Uint8Array, at: number): [number, number] {
  let v = 0;
  let mul = 1;
  for (;;) {
    if (at >= b.length) throw new RangeError("truncated varint");
    const c = b[at++]!;
    v += (c & 0x7f) * mul;
    if (c < 0x80) return [v, at];
    mul *= 128;
  }
}

/** Skips a field of wire type `wt` at `at`. */
function skip(b: Uint8Array, at: number, wt: number): number {
  if (wt === 0) return varint(b, at)[1];
  if (wt === 1) return at + 8;
  if (wt === 5) return at + 4;
  if (wt === 2) {
    const [len, p] = varint(b, at);
    return p + len;
  }
  throw new RangeError(`wire type ${wt} not expected`);
}

/** Calls `fn` for each length-delimited field `field` in b[start, end). */
function eachMessage(b: Uint8Array, start: number, end: number, field: number, fn: (start: number, end: number) => void): void {
  let at = start;
  while (at < end) {
    const [tag, p] = varint(b, at);
    if (tag === ((field << 3) | 2)) {
      const [len, q] = varint(b, p);
      fn(q, q + len);
      at = q + len;
    } else at = skip(b, p, tag & 7);
  }
}

/** Milliseconds of the Timestamp in b[start, end). */
function timestampMs(b: Uint8Array, start: number, end: number): number {
  let seconds = 0;
  let nanos = 0;
  let at = start;
  while (at < end) {
    const [tag, p] = varint(b, at);
    if (tag === 0x08) [seconds, at] = varint(b, p);
    else if (tag === 0x10) [nanos, at] = varint(b, p);
    else at = skip(b, p, tag & 7);
  }
  return seconds * 1000 + nanos / 1e6;
}

/** One event of a watch response: its kind, and its position's recorded_at in ms (NaN without one). */
export interface EventTime {
  kind: number;
  recordedAtMs: number;
}

/** The events of a WatchVehiclesResponse or WatchAreaResponse (one shape: repeated VehicleEvent events = 1). */
export function readWatchResponse(b: Uint8Array, start = 0, end = b.length): EventTime[] {
  const out: EventTime[] = [];
  eachMessage(b, start, end, 1, (es, ee) => {
    let kind = 0;
    let recordedAtMs = NaN;
    let at = es;
    while (at < ee) {
      const [tag, p] = varint(b, at);
      if (tag === 0x08) [kind, at] = varint(b, p);
      else if (tag === 0x12) {
        // VehicleState.position (1) -> Position.recorded_at (3)
        const [len, q] = varint(b, p);
        eachMessage(b, q, q + len, 1, (ps, pe) => eachMessage(b, ps, pe, 3, (ts, te) => (recordedAtMs = timestampMs(b, ts, te))));
        at = q + len;
      } else at = skip(b, p, tag & 7);
    }
    out.push({ kind, recordedAtMs });
  });
  return out;
}
