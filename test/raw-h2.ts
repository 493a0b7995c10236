/**
 * A raw HTTP/2 client for tests of the server's edges: frames made by hand over `node:net`, so that
 * a test can send what no well-behaved client library would (1-byte DATA frames, a reset storm,
 * endless CONTINUATION frames, a ping flood) and see exactly what the server answers. It shares no
 * code with the server: header blocks are encoded here (literals, no Huffman) and decoded by
 * libnghttp2 (the library curl uses) through bun:ffi, not by Bun's HTTP/2.
 */
import net from "node:net";
import { dlopen, FFIType, toBuffer, type Pointer } from "bun:ffi";

export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;
const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

let nghttp2: ReturnType<typeof openNghttp2> | undefined;
function openNghttp2() {
  return dlopen("libnghttp2.so.14", {
    nghttp2_hd_inflate_new: { args: [FFIType.ptr], returns: FFIType.i32 },
    nghttp2_hd_inflate_hd2: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i64 },
    nghttp2_hd_inflate_end_headers: { args: [FFIType.ptr], returns: FFIType.i32 },
    nghttp2_hd_inflate_del: { args: [FFIType.ptr], returns: FFIType.void },
  }).symbols;
}

/** One connection's HPACK decoder (libnghttp2's inflater). */
class HeaderDecoder {
  private readonly lib = (nghttp2 ??= openNghttp2());
  private readonly inflater: Pointer;
  constructor() {
    const out = new BigUint64Array(1);
    if (this.lib.nghttp2_hd_inflate_new(out) !== 0) throw new Error("nghttp2_hd_inflate_new failed");
    this.inflater = Number(out[0]) as Pointer;
  }
  decode(block: Buffer): [string, string][] {
    const nv = new Uint8Array(40); // nghttp2_nv: name*, value*, namelen, valuelen, flags
    const view = new DataView(nv.buffer);
    const flags = new Int32Array(1);
    const out: [string, string][] = [];
    let off = 0;
    for (;;) {
      const rest = block.subarray(off);
      const n = Number(
        this.lib.nghttp2_hd_inflate_hd2(this.inflater, nv, flags, rest.length > 0 ? rest : new Uint8Array(1), rest.length, 1),
      );
      if (n < 0) throw new Error(`HPACK decoding failed (${n})`);
      off += n;
      if (flags[0]! & 0x2) {
        const at = (offset: number) => Number(view.getBigUint64(offset, true));
        const name = toBuffer(at(0) as Pointer, 0, at(16)).toString("latin1");
        const value = toBuffer(at(8) as Pointer, 0, at(24)).toString("latin1");
        out.push([name, value]);
      }
      if (flags[0]! & 0x1) {
        this.lib.nghttp2_hd_inflate_end_headers(this.inflater);
        return out;
      }
      if (n === 0 && !(flags[0]! & 0x2)) return out;
    }
  }
  close(): void {
    this.lib.nghttp2_hd_inflate_del(this.inflater);
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

/** A header block of literals without indexing and without Huffman: the plainest valid HPACK. */
export function encodeHeaders(headers: [string, string][]): Buffer {
  const parts: number[] = [];
  for (const [name, value] of headers) {
    const n = Buffer.from(name, "latin1");
    const v = Buffer.from(value, "latin1");
    parts.push(0x00, ...hpackInt(n.length, 7, 0), ...n, ...hpackInt(v.length, 7, 0), ...v);
  }
  return Buffer.from(parts);
}

export function frame(type: number, flags: number, streamId: number, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  const out = Buffer.alloc(9 + payload.length);
  out.writeUIntBE(payload.length, 0, 3);
  out[3] = type;
  out[4] = flags;
  out.writeUInt32BE(streamId & 0x7fffffff, 5);
  out.set(payload, 9);
  return out;
}

/** A gRPC length-prefixed message. */
export function grpcFrame(message: Uint8Array, compressed = false): Buffer {
  const out = Buffer.alloc(5 + message.length);
  out[0] = compressed ? 1 : 0;
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

export interface RawStream {
  headers: [string, string][][];
  data: Buffer[];
  ended: boolean;
  /** RST_STREAM error code from the server. */
  reset?: number;
}

/** Everything the server said on one connection, and ways to send it anything. */
export class RawH2 {
  readonly streams = new Map<number, RawStream>();
  goaway?: { lastStreamId: number; code: number; debug: string };
  closed = false;
  pingAcks = 0;
  serverSettings = new Map<number, number>();
  private nextId = 1;
  private buf: Buffer = Buffer.alloc(0);
  private decoder = new HeaderDecoder();
  private block: { id: number; parts: Buffer[]; endStream: boolean } | undefined;
  private connWindow = 65535;
  private initialStreamWindow = 65535;
  private streamWindows = new Map<number, number>();
  private waiters: (() => void)[] = [];

  private constructor(readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("close", () => {
      this.closed = true;
      this.decoder.close();
      this.wake();
    });
    socket.on("error", () => {});
  }

  /** Connects, sends the preface and SETTINGS (`settings`: id → value). */
  static async connect(port: number, settings: [number, number][] = [], host = "127.0.0.1"): Promise<RawH2> {
    const socket = net.connect(port, host);
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    socket.setNoDelay(true);
    const c = new RawH2(socket);
    const payload = Buffer.alloc(6 * settings.length);
    settings.forEach(([id, value], i) => {
      payload.writeUInt16BE(id, 6 * i);
      payload.writeUInt32BE(value, 6 * i + 2);
    });
    socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0, payload)]));
    return c;
  }

  send(bytes: Buffer): boolean {
    if (this.closed) return false;
    return this.socket.write(bytes);
  }

  /** Opens a stream with these headers (pseudo-headers first); returns its id. */
  request(headers: [string, string][], endStream = false): number {
    const id = this.nextId;
    this.nextId += 2;
    this.streams.set(id, { headers: [], data: [], ended: false });
    this.streamWindows.set(id, this.initialStreamWindow);
    this.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | (endStream ? FLAG.END_STREAM : 0), id, encodeHeaders(headers)));
    return id;
  }

  /** Sends `body` on stream `id` in DATA frames of `frameSize` bytes, within the server's flow-control windows. */
  async data(id: number, body: Buffer, frameSize: number, endStream = true): Promise<void> {
    let off = 0;
    while (off < body.length) {
      const room = Math.min(this.connWindow, this.streamWindows.get(id) ?? 0);
      if (room <= 0) {
        if (this.closed || this.streams.get(id)?.reset !== undefined) throw new Error("stream gone while sending");
        await this.changed();
        continue;
      }
      const frames: Buffer[] = [];
      let sent = 0;
      while (sent < room && off < body.length) {
        const n = Math.min(frameSize, room - sent, body.length - off);
        const last = off + n === body.length;
        frames.push(frame(FRAME.DATA, last && endStream ? FLAG.END_STREAM : 0, id, body.subarray(off, off + n)));
        off += n;
        sent += n;
      }
      this.connWindow -= sent;
      this.streamWindows.set(id, (this.streamWindows.get(id) ?? 0) - sent);
      if (!this.send(Buffer.concat(frames))) await new Promise((resolve) => this.socket.once("drain", resolve));
    }
    if (body.length === 0 && endStream) this.send(frame(FRAME.DATA, FLAG.END_STREAM, id));
  }

  /** Resolves once `done()` is true, or rejects after `timeoutMs`. */
  async until(done: () => boolean, timeoutMs = 5000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!done()) {
      if (Date.now() > end) throw new Error("raw h2: timed out waiting");
      await Promise.race([this.changed(), Bun.sleep(20)]);
    }
  }

  /** The value of `name` in the stream's last header block (trailers, or trailers-only headers). */
  header(id: number, name: string): string | undefined {
    const blocks = this.streams.get(id)?.headers ?? [];
    for (let i = blocks.length - 1; i >= 0; i--) {
      const hit = blocks[i]!.find(([k]) => k === name);
      if (hit) return hit[1];
    }
    return undefined;
  }

  /** The stream ended (END_STREAM or reset) or the connection is gone. */
  done(id: number): boolean {
    const s = this.streams.get(id);
    return this.closed || !s || s.ended || s.reset !== undefined;
  }

  close(): void {
    this.socket.destroy();
  }

  private changed(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    while (this.buf.length >= 9) {
      const len = this.buf.readUIntBE(0, 3);
      if (this.buf.length < 9 + len) break;
      const type = this.buf[3]!;
      const flags = this.buf[4]!;
      const id = this.buf.readUInt32BE(5) & 0x7fffffff;
      const payload = this.buf.subarray(9, 9 + len);
      this.buf = this.buf.subarray(9 + len);
      this.onFrame(type, flags, id, payload);
    }
    this.wake();
  }

  private onFrame(type: number, flags: number, id: number, payload: Buffer): void {
    const stream = this.streams.get(id);
    switch (type) {
      case FRAME.SETTINGS:
        if (flags & FLAG.ACK) return;
        for (let i = 0; i + 6 <= payload.length; i += 6) {
          const key = payload.readUInt16BE(i);
          const value = payload.readUInt32BE(i + 2);
          this.serverSettings.set(key, value);
          if (key === 4) {
            const delta = value - this.initialStreamWindow;
            this.initialStreamWindow = value;
            for (const [sid, w] of this.streamWindows) this.streamWindows.set(sid, w + delta);
          }
        }
        this.send(frame(FRAME.SETTINGS, FLAG.ACK, 0));
        return;
      case FRAME.PING:
        if (flags & FLAG.ACK) this.pingAcks++;
        else this.send(frame(FRAME.PING, FLAG.ACK, 0, payload));
        return;
      case FRAME.GOAWAY:
        this.goaway = {
          lastStreamId: payload.readUInt32BE(0) & 0x7fffffff,
          code: payload.readUInt32BE(4),
          debug: payload.subarray(8).toString(),
        };
        return;
      case FRAME.WINDOW_UPDATE: {
        const inc = payload.readUInt32BE(0) & 0x7fffffff;
        if (id === 0) this.connWindow += inc;
        else this.streamWindows.set(id, (this.streamWindows.get(id) ?? 0) + inc);
        return;
      }
      case FRAME.RST_STREAM:
        if (stream) stream.reset = payload.readUInt32BE(0);
        return;
      case FRAME.DATA:
        if (!stream) return;
        stream.data.push(Buffer.from(payload));
        if (payload.length > 0) {
          // Give the credit straight back: these tests read everything.
          const inc = Buffer.alloc(4);
          inc.writeUInt32BE(payload.length);
          this.send(Buffer.concat([frame(FRAME.WINDOW_UPDATE, 0, 0, inc), frame(FRAME.WINDOW_UPDATE, 0, id, inc)]));
        }
        if (flags & FLAG.END_STREAM) stream.ended = true;
        return;
      case FRAME.HEADERS:
      case FRAME.CONTINUATION: {
        if (type === FRAME.HEADERS) {
          let body = payload;
          if (flags & 0x8) body = body.subarray(1, body.length - body[0]!); // PADDED
          if (flags & 0x20) body = body.subarray(5); // PRIORITY
          this.block = { id, parts: [Buffer.from(body)], endStream: (flags & FLAG.END_STREAM) !== 0 };
        } else this.block?.parts.push(Buffer.from(payload));
        if (!(flags & FLAG.END_HEADERS) || !this.block) return;
        const headers = this.decoder.decode(Buffer.concat(this.block.parts));
        const s = this.streams.get(this.block.id);
        if (s) {
          s.headers.push(headers);
          if (this.block.endStream) s.ended = true;
        }
        this.block = undefined;
        return;
      }
    }
  }
}

/** The gRPC messages of a stream's DATA. */
export function grpcMessages(stream: RawStream): Buffer[] {
  const all = Buffer.concat(stream.data);
  const out: Buffer[] = [];
  for (let off = 0; off + 5 <= all.length; ) {
    const len = all.readUInt32BE(off + 1);
    out.push(all.subarray(off + 5, off + 5 + len));
    off += 5 + len;
  }
  return out;
}
