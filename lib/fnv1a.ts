/**
 * FNV-1a, 32 bits: the hash that spreads vehicles over the stream's partitions (lib/nats/subjects.ts)
 * and over the tracker's state buckets (tracker/bucket.ts). Both are part of the data layout (a
 * vehicle's points stay in one partition, its record in one Redis hash), so the hash must never
 * change; it lives here once. tracker/nearby.lua has the one Lua copy, proven equal in
 * tracker/test/store.test.ts.
 */

const OFFSET = 0x811c9dc5;
const PRIME = 0x01000193;

/** FNV-1a of `bytes[start, end)`, as an unsigned 32-bit integer. */
export function fnv1a(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let h = OFFSET;
  for (let i = start; i < end; i++) {
    h ^= bytes[i]!;
    h = Math.imul(h, PRIME);
  }
  return h >>> 0;
}

/** FNV-1a of a string's UTF-8 bytes; an ASCII string (most ids) is hashed without encoding it. */
export function fnv1aUtf8(text: string): number {
  let h = OFFSET;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x80) return fnv1a(Buffer.from(text, "utf8"));
    h ^= c;
    h = Math.imul(h, PRIME);
  }
  return h >>> 0;
}

/**
 * FNV-1a over a string's UTF-16 code units, each XORed in whole: the same as fnv1aUtf8 for ASCII,
 * not for other text. The stream's partitions have always been chosen by this one, and a vehicle's
 * partition must not move (its points would be out of order across a deploy), so it stays.
 */
export function fnv1aUtf16(text: string): number {
  let h = OFFSET;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, PRIME);
  }
  return h >>> 0;
}
