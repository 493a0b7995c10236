/**
 * HPACK (RFC 7541) decoder for the request side, and the few fixed header blocks the server sends.
 * The server only ever encodes literals without indexing (its responses are a handful of fixed
 * fields), so no encoder state exists; the decoder keeps the dynamic table the client builds.
 */
import { HUFFMAN_CODES, STATIC_TABLE } from "./hpack-tables";

export class HpackError extends Error {}

// Huffman decoding tree, built once: node i has children child[2i] (bit 0) and child[2i+1]
// (bit 1); a child value < 0 is a leaf holding symbol -(value + 1).
const child = new Int32Array(2 * 512);
{
  let nodes = 1;
  for (let sym = 0; sym < HUFFMAN_CODES.length; sym++) {
    const [bits, code] = HUFFMAN_CODES[sym]!;
    let node = 0;
    for (let b = bits - 1; b >= 0; b--) {
      const slot = 2 * node + ((code >>> b) & 1);
      if (b === 0) child[slot] = -(sym + 1);
      else {
        if (child[slot] === 0) child[slot] = nodes++;
        node = child[slot]!;
      }
    }
  }
}

/** Scratch for Huffman output: header strings are bounded by the header-list limit. */
let huffOut = Buffer.allocUnsafe(4096);

function huffmanDecode(src: Uint8Array, start: number, end: number): string {
  if (huffOut.length < (end - start) * 2) huffOut = Buffer.allocUnsafe((end - start) * 2);
  let n = 0;
  let node = 0;
  let depth = 0; // bits since the last symbol
  let ones = true; // those bits were all 1 (valid padding is a prefix of EOS)
  for (let i = start; i < end; i++) {
    const byte = src[i]!;
    for (let b = 7; b >= 0; b--) {
      const bit = (byte >>> b) & 1;
      const next = child[2 * node + bit]!;
      if (bit === 0) ones = false;
      depth++;
      if (next < 0) {
        const sym = -next - 1;
        if (sym === 256) throw new HpackError("EOS in Huffman string");
        huffOut[n++] = sym;
        node = 0;
        depth = 0;
        ones = true;
      } else if (next === 0) {
        throw new HpackError("invalid Huffman code");
      } else node = next;
    }
  }
  if (depth > 7 || !ones) throw new HpackError("invalid Huffman padding");
  return huffOut.toString("latin1", 0, n);
}

export class HpackDecoder {
  /**
   * The dynamic table as name, value, name, value, …, newest entry first (index 62 of the combined
   * address space). Made on the first insert: a client that never indexes (literals only, as the
   * platform bench's vehicles) costs no array per connection.
   */
  private table: string[] | null = null;
  private size = 0;
  private maxSize: number;
  private pos = 0;

  /** `limit`: our SETTINGS_HEADER_TABLE_SIZE; `maxListSize`: our SETTINGS_MAX_HEADER_LIST_SIZE. */
  constructor(
    private readonly limit = 4096,
    private readonly maxListSize = 16384,
  ) {
    this.maxSize = limit;
  }

  /**
   * Decodes one complete header block, appending name, value, name, value, … to `out`. Returns false
   * when the list is over SETTINGS_MAX_HEADER_LIST_SIZE: the block is still decoded to its end (the
   * dynamic table must stay in step with the peer's), but fields past the limit are not appended.
   */
  decode(block: Buffer, out: string[]): boolean {
    let within = true;
    this.pos = 0;
    const end = block.length;
    let listSize = 0;
    let fields = 0;
    while (this.pos < end) {
      const b = block[this.pos]!;
      let name: string;
      let value: string;
      if (b & 0x80) {
        const index = this.int(block, 7);
        if (index === 0) throw new HpackError("index 0");
        name = this.nameAt(index);
        value = this.valueAt(index);
      } else if (b & 0x40) {
        const index = this.int(block, 6);
        name = index === 0 ? this.str(block) : this.nameAt(index);
        value = this.str(block);
        this.insert(name, value);
      } else if (b & 0x20) {
        if (fields > 0) throw new HpackError("table size update after a field");
        const size = this.int(block, 5);
        if (size > this.limit) throw new HpackError("table size update above SETTINGS_HEADER_TABLE_SIZE");
        this.maxSize = size;
        this.evict(0);
        continue;
      } else {
        // Literal without indexing (0000) or never indexed (0001).
        const index = this.int(block, 4);
        name = index === 0 ? this.str(block) : this.nameAt(index);
        value = this.str(block);
      }
      fields++;
      listSize += name.length + value.length + 32;
      if (listSize > this.maxListSize) within = false;
      else out.push(name, value);
    }
    return within;
  }

  private int(block: Uint8Array, prefixBits: number): number {
    const max = (1 << prefixBits) - 1;
    let value = block[this.pos++]! & max;
    if (value < max) return value;
    let shift = 0;
    for (;;) {
      if (this.pos >= block.length) throw new HpackError("truncated integer");
      const b = block[this.pos++]!;
      value += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if ((b & 0x80) === 0) break;
      if (shift > 28) throw new HpackError("integer too large");
    }
    return value;
  }

  private str(block: Buffer): string {
    if (this.pos >= block.length) throw new HpackError("truncated string");
    const huffman = (block[this.pos]! & 0x80) !== 0;
    const len = this.int(block, 7);
    const start = this.pos;
    const end = start + len;
    if (end > block.length) throw new HpackError("truncated string");
    this.pos = end;
    if (huffman) return huffmanDecode(block, start, end);
    return block.toString("latin1", start, end);
  }

  private nameAt(index: number): string {
    if (index <= 61) return STATIC_TABLE[index - 1]![0];
    const name = this.table?.[2 * (index - 62)];
    if (name === undefined) throw new HpackError("index beyond the dynamic table");
    return name;
  }

  private valueAt(index: number): string {
    if (index <= 61) return STATIC_TABLE[index - 1]![1];
    const value = this.table?.[2 * (index - 62) + 1];
    if (value === undefined) throw new HpackError("index beyond the dynamic table");
    return value;
  }

  private insert(name: string, value: string): void {
    const entry = name.length + value.length + 32;
    if (entry > this.maxSize) {
      // An entry larger than the table empties it and is not added (RFC 7541 §4.4).
      this.table = null;
      this.size = 0;
      return;
    }
    this.evict(entry);
    (this.table ??= []).unshift(name, value);
    this.size += entry;
  }

  private evict(room: number): void {
    const table = this.table;
    while (this.size + room > this.maxSize && table !== null && table.length > 0) {
      const value = table.pop()!;
      const name = table.pop()!;
      this.size -= name.length + value.length + 32;
    }
  }
}

function hpackInt(value: number, prefixBits: number, first: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [first | value];
  const out = [first | max];
  value -= max;
  while (value >= 128) {
    out.push((value & 0x7f) | 0x80);
    value >>>= 7;
  }
  out.push(value);
  return out;
}

/** gRPC's percent-encoding of grpc-message: only bytes outside printable ASCII, and '%'. */
export function grpcPercentEncode(message: string): string {
  let out = "";
  for (const b of Buffer.from(message, "utf8")) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** A literal header field without indexing, name and value as raw (non-Huffman) strings. */
export function literal(name: string, value: string): Buffer {
  const n = Buffer.from(name, "latin1");
  const v = Buffer.from(value, "latin1");
  return Buffer.from([0x00, ...hpackInt(n.length, 7, 0), ...n, ...hpackInt(v.length, 7, 0), ...v]);
}

/** `:status: 200` (static index 8) and `content-type: application/grpc` (name index 31). */
export const RESPONSE_HEADERS = Buffer.concat([
  Buffer.from([0x88]),
  Buffer.from([0x0f, 31 - 15, 16]),
  Buffer.from("application/grpc", "latin1"),
]);
