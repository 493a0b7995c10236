/**
 * Protobuf base-128 varints for non-negative integers below 2^53, shared by the gateway's hand
 * encoder and the benchmark's point codec (both write exactly what protobuf-es writes).
 */

/** Bytes the varint of `v` takes. */
export function varintSize(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 0x80);
    n++;
  }
  return n;
}

/** Writes the varint of `v` at `at`; returns the offset after it. */
export function writeVarint(buf: Uint8Array, at: number, v: number): number {
  while (v >= 0x80) {
    buf[at++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  buf[at++] = v;
  return at;
}
