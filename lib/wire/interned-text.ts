/**
 * Strings read from byte ranges of protobuf messages (vehicle and fleet ids of a PositionBatch),
 * made once per distinct id: a batch holds the same few ids many times, and making each string anew
 * (a view of the bytes and a string a point) was a quarter of the history writer's CPU. Used by the
 * sinks and the gateway's stream follower, which all read every point of the stream.
 */

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Ids seen, by a hash of their bytes. Bounded: cleared when full. */
const interned = new Map<number, { bytes: Uint8Array; text: string }>();
const INTERNED_MAX = 100_000;

/**
 * The text of bytes[start, end). `ascii`: the caller knows no byte is over 0x7f (the position
 * reader says so per message). Non-ASCII text is decoded strictly: invalid UTF-8 throws a TypeError.
 */
export function internedText(bytes: Uint8Array, start: number, end: number, ascii: boolean): string {
  if (start === end) return "";
  const len = end - start;
  if (!ascii || len > 64) {
    return ascii
      ? String.fromCharCode.apply(null, bytes.subarray(start, end) as unknown as number[])
      : utf8.decode(bytes.subarray(start, end));
  }
  let h = len;
  for (let i = start; i < end; i++) h = (Math.imul(h, 31) + bytes[i]!) | 0;
  const known = interned.get(h);
  if (known && known.bytes.length === len) {
    let same = true;
    for (let i = 0; i < len; i++) {
      if (known.bytes[i] !== bytes[start + i]) {
        same = false;
        break;
      }
    }
    if (same) return known.text;
  }
  const t = String.fromCharCode.apply(null, bytes.subarray(start, end) as unknown as number[]);
  if (interned.size >= INTERNED_MAX) interned.clear();
  interned.set(h, { bytes: bytes.slice(start, end), text: t });
  return t;
}
