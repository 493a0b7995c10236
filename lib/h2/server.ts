/**
 * A minimal HTTP/2 server for gRPC on Bun.listen's native sockets (h2c with prior knowledge, or
 * TLS with ALPN "h2"): the gateway's vehicle listener (lib/grpc/serve-lite.ts, GATEWAY_VEHICLE_PORT).
 *
 * Why: node:http2 in Bun costs ~14 KB per connection with one open stream and 0.34 µs of CPU per
 * message written; here 2.1-2.2 KB and 0.09 µs (experiments/h2lite/README.md: 5,000 connections,
 * RSS after GC), since each connection is one object, each stream a small one, and writes are
 * batched per tick into one send() per connection.
 *
 * Scope: server side only; requests must be gRPC (POST, content-type application/grpc…);
 * responses are HEADERS, DATA, trailers. No server push, no priorities (PRIORITY is ignored).
 *
 * Hostile peers: streams above SETTINGS_MAX_CONCURRENT_STREAMS are refused, a header list above
 * SETTINGS_MAX_HEADER_LIST_SIZE is answered RESOURCE_EXHAUSTED, a header block past twice that
 * limit or in more than 8 CONTINUATIONs, more control frames (PING, SETTINGS, PRIORITY, RST_STREAM, empty DATA)
 * or more stream resets per second than the options allow end the connection with GOAWAY
 * ENHANCE_YOUR_CALM; DATA beyond our window and bad WINDOW_UPDATEs are the RFC's errors; a peer
 * that does not read is cut once `maxBufferedBytes` wait for it; a connection that receives
 * nothing for `idleTimeoutMs` gets GOAWAY, and over TLS one without a completed handshake after
 * `handshakeTimeoutMs` is cut; past `maxConnections` a new connection is closed.
 */
import type { Socket, TCPSocketListener } from "bun";
import { grpcPercentEncode, HpackDecoder, HpackError, literal, RESPONSE_HEADERS } from "./hpack";

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

const DATA = 0;
const HEADERS = 1;
const PRIORITY = 2;
const RST_STREAM = 3;
const SETTINGS = 4;
const PUSH_PROMISE = 5;
const PING = 6;
const GOAWAY = 7;
const WINDOW_UPDATE = 8;
const CONTINUATION = 9;

const FLAG_END_STREAM = 0x1;
const FLAG_ACK = 0x1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;

export const H2_NO_ERROR = 0;
const PROTOCOL_ERROR = 1;
const FLOW_CONTROL_ERROR = 3;
const STREAM_CLOSED = 5;
const FRAME_SIZE_ERROR = 6;
const REFUSED_STREAM = 7;
const CANCEL = 8;
const COMPRESSION_ERROR = 9;
const ENHANCE_YOUR_CALM = 11;
/** gRPC statuses of a call that ended because its deadline passed or it was cancelled. */
const GRPC_CANCELLED = 1;
const GRPC_DEADLINE_EXCEEDED = 4;

/** Our receive windows are the protocol default; we return what the handler consumed. */
const RECV_WINDOW = 65535;
/** Return window once half of it is consumed: one WINDOW_UPDATE per ~32 KB, not per frame. */
const WINDOW_UPDATE_AT = 32768;
const MAX_FRAME_SIZE = 16384;
const MAX_WINDOW = 2 ** 31 - 1;
/** CONTINUATION frames a header block may take (nghttp2's default); more is a flood. */
const MAX_CONTINUATIONS = 8;

export interface H2Options {
  /** SETTINGS_MAX_CONCURRENT_STREAMS: more open streams are refused (REFUSED_STREAM). Default 100. */
  maxConcurrentStreams?: number;
  /** Largest gRPC message accepted, bytes (grpc's default 4 MiB). */
  maxMessageBytes?: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE (RFC 7541 sizes): a larger request is answered RESOURCE_EXHAUSTED. Default 16 KiB. */
  maxHeaderListSize?: number;
  /** Connections open at once; past it a new one is closed at once. Default 10,000. */
  maxConnections?: number;
  /** A connection that receives nothing for this long gets GOAWAY and is closed (0: never). Default 0. */
  idleTimeoutMs?: number;
  /**
   * Over TLS, a connection whose handshake has not completed this long after its accept (or after
   * idleTimeoutMs, if sooner) is cut. Default 10 s (FLEET_HEADERS_TIMEOUT's default).
   */
  handshakeTimeoutMs?: number;
  /**
   * Bytes a connection may hold unsent because its peer does not read: past it the connection is
   * cut (its calls are cancelled). Streams wait for `onDrain` long before (see Call.write), so only
   * a peer that stopped reading gets here. Default 1 MiB.
   */
  maxBufferedBytes?: number;
  /** PING, SETTINGS, PRIORITY, RST_STREAM and empty DATA frames a peer may send per second. Default 1,000. */
  maxControlFramesPerSecond?: number;
  /** Open streams a peer may reset per second (rapid reset: each costs a call's start). Default 200. */
  maxResetsPerSecond?: number;
  /** Told of connections refused past maxConnections (the count so far) and of connections ended for a flood. */
  onEvent?(event: "refused" | "flood" | "unread", count: number): void;
}

/** What a service implements for one method; `call.state` is the handler's per-call slot. */
export interface GrpcHandler {
  onOpen?(call: Call, headers: string[]): void;
  /**
   * The request's gRPC framing is bad: a compressed message, one above maxMessageBytes (`length`),
   * or the stream ended inside a message. Nothing more of the stream is delivered. Without this
   * the call ends at once with a status of its own.
   */
  onInvalid?(call: Call, problem: "compressed" | "too-large" | "truncated", length: number): void;
  /**
   * One message, at `buf[start, end)`: valid only during this call (it may lie in the socket's
   * chunk). Offsets rather than a view: making a view of a Buffer costs about what decoding a
   * point does (lib/grpc/input.ts).
   */
  onMessage(call: Call, buf: Buffer, start: number, end: number): void;
  onHalfClose(call: Call): void;
  onCancel?(call: Call): void;
  /** The call can take writes again after `write` returned false. */
  onDrain?(call: Call): void;
}

export type Router = (path: string) => GrpcHandler | undefined;

export const GRPC_OK_TRAILERS = literal("grpc-status", "0");

// Call's flags.
const REMOTE_CLOSED = 1;
const LOCAL_CLOSED = 2;
const HEADERS_SENT = 4;
const WANT_DRAIN = 8;
const PAUSED = 16;
const BROKEN = 32;

/** One gRPC call = one HTTP/2 stream. */
export class Call {
  handler: GrpcHandler | null = null;
  state: unknown = undefined;
  sendWindow: number;
  private recvUnacked = 0;
  /**
   * A gRPC message split across DATA frames: its bytes so far (5-byte prefix included) in `msgBuf`,
   * which grows with them; `msgNeed`: 5 while only the prefix is awaited, then 5 + its length.
   */
  private msgBuf: Buffer | null = null;
  private msgFill = 0;
  private msgNeed = 0;
  /** DATA payloads waiting for flow-control window (the first one's unsent rest, once part of it went). */
  pending: Buffer[] | null = null;
  private pendingTrailers: Buffer | null = null;
  /**
   * remoteClosed, localClosed, headersSent, wantDrain, paused and broken, in one number: a vehicle's
   * stream lives as long as its connection, and six boolean fields took the object to 160 B.
   */
  private flags = 0;

  constructor(
    readonly conn: H2Connection,
    readonly id: number,
  ) {
    this.sendWindow = conn.peerInitialWindow;
  }

  get remoteClosed(): boolean {
    return (this.flags & REMOTE_CLOSED) !== 0;
  }
  set remoteClosed(on: boolean) {
    this.flags = on ? this.flags | REMOTE_CLOSED : this.flags & ~REMOTE_CLOSED;
  }
  get localClosed(): boolean {
    return (this.flags & LOCAL_CLOSED) !== 0;
  }
  set localClosed(on: boolean) {
    this.flags = on ? this.flags | LOCAL_CLOSED : this.flags & ~LOCAL_CLOSED;
  }
  private get headersSent(): boolean {
    return (this.flags & HEADERS_SENT) !== 0;
  }
  private set headersSent(on: boolean) {
    this.flags = on ? this.flags | HEADERS_SENT : this.flags & ~HEADERS_SENT;
  }
  get wantDrain(): boolean {
    return (this.flags & WANT_DRAIN) !== 0;
  }
  set wantDrain(on: boolean) {
    this.flags = on ? this.flags | WANT_DRAIN : this.flags & ~WANT_DRAIN;
  }
  /** The handler takes no messages for now: DATA received is not credited back (flow control holds the peer). */
  private get paused(): boolean {
    return (this.flags & PAUSED) !== 0;
  }
  private set paused(on: boolean) {
    this.flags = on ? this.flags | PAUSED : this.flags & ~PAUSED;
  }
  /** Bad framing was reported: the rest of the stream is dropped. */
  private get broken(): boolean {
    return (this.flags & BROKEN) !== 0;
  }
  private set broken(on: boolean) {
    this.flags = on ? this.flags | BROKEN : this.flags & ~BROKEN;
  }

  /** Sends response headers now (otherwise they go with the first message); `extra`: more literal fields after the fixed ones. */
  sendHeaders(extra?: Buffer): void {
    if (this.headersSent || this.localClosed) return;
    this.headersSent = true;
    this.conn.headers(this.id, 0, extra ? Buffer.concat([RESPONSE_HEADERS, extra]) : RESPONSE_HEADERS);
  }

  /** Stops crediting received DATA back to the peer, so that its flow-control window closes. */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.recvUnacked >= WINDOW_UPDATE_AT && !this.remoteClosed) {
      this.conn.windowUpdate(this.id, this.recvUnacked);
      this.recvUnacked = 0;
    }
  }

  /** Writes one gRPC message. Returns false when the caller should wait for `onDrain`. */
  write(message: Uint8Array): boolean {
    if (this.localClosed) return false;
    if (!this.headersSent) this.sendHeaders();
    const conn = this.conn;
    const total = 5 + message.length;
    if (this.pending === null && total <= this.sendWindow && total <= conn.sendWindow && total <= conn.peerMaxFrame) {
      let buf = conn.wbuf;
      const last = conn.lastDataOff;
      if (
        buf !== null &&
        last >= 0 &&
        conn.lastDataStream === this.id &&
        conn.wlen + total <= buf.length &&
        ((buf[last]! << 16) | (buf[last + 1]! << 8) | buf[last + 2]!) + total <= conn.peerMaxFrame
      ) {
        // The previous frame in the buffer is this stream's DATA: grow it instead of adding a frame
        // header (what node:http2 in Bun does too; the client then parses one frame, not hundreds).
        const len = ((buf[last]! << 16) | (buf[last + 1]! << 8) | buf[last + 2]!) + total;
        buf[last] = len >>> 16;
        buf[last + 1] = (len >>> 8) & 0xff;
        buf[last + 2] = len & 0xff;
      } else {
        buf = conn.reserve(9 + total);
        conn.lastDataOff = conn.wlen;
        conn.lastDataStream = this.id;
        conn.wlen = writeFrameHeader(buf, conn.wlen, total, DATA, 0, this.id);
      }
      const o = conn.wlen;
      buf[o] = 0;
      buf.writeUInt32BE(message.length, o + 1);
      buf.set(message, o + 5);
      conn.wlen = o + total;
      this.sendWindow -= total;
      conn.sendWindow -= total;
    } else {
      const payload = Buffer.allocUnsafe(total);
      payload[0] = 0;
      payload.writeUInt32BE(message.length, 1);
      payload.set(message, 5);
      if (this.pending === null) {
        this.pending = [payload];
        conn.blocked++;
      } else this.pending.push(payload);
      this.flushPending();
    }
    if (this.pending === null && conn.backlog === null) return true;
    this.wantDrain = true;
    return false;
  }

  /** Ends the call with a gRPC status (after any queued messages). */
  end(status: number, message?: string): void {
    let block = status === 0 && !message ? GRPC_OK_TRAILERS : literal("grpc-status", String(status));
    if (message) block = Buffer.concat([block, literal("grpc-message", grpcPercentEncode(message))]);
    this.endWith(block, undefined, status === GRPC_CANCELLED || status === GRPC_DEADLINE_EXCEEDED);
  }

  /**
   * Ends the call with this trailer block (literal fields, grpc-status among them), after any
   * queued messages; with no response headers sent yet it is a trailers-only response.
   * `headers`: literal fields for the response headers of a trailers-only response.
   * `cancelIfBlocked`: the call ended past its deadline or was cancelled; if DATA still waits for
   * window it is reset (RST_STREAM CANCEL) instead, since its trailers would wait behind that DATA
   * for a peer that gives none (such a call would otherwise outlive its deadline for as long as the
   * peer keeps the connection). Any other status waits behind the DATA, so that a client that reads
   * gets it with its reason (the connection's unsent-bytes cut and idle timeout bound the wait).
   */
  endWith(block: Buffer, headers?: Buffer, cancelIfBlocked = false): void {
    if (this.localClosed || this.pendingTrailers !== null) return;
    if (cancelIfBlocked && this.pending !== null) return this.abort(CANCEL);
    if (!this.headersSent) {
      // Trailers-only response: one HEADERS frame with the status.
      this.headersSent = true;
      block = headers ? Buffer.concat([RESPONSE_HEADERS, headers, block]) : Buffer.concat([RESPONSE_HEADERS, block]);
    }
    this.pendingTrailers = block;
    if (this.pending === null) this.sendTrailers();
  }

  private sendTrailers(): void {
    const block = this.pendingTrailers!;
    this.pendingTrailers = null;
    this.localClosed = true;
    this.conn.headers(this.id, FLAG_END_STREAM, block);
    // Forget the stream. No RST_STREAM NO_ERROR with the trailers (RFC 9113 8.1 allows one): curl
    // 7.88 (libnghttp2) then failed 1 to 2 calls in 30 with "(92) Stream error" instead of the
    // status, when the RST came before it had sent its whole request. A client that goes on sending
    // gets it then (onFrame's DATA on a closed stream).
    this.conn.remove(this);
  }

  /**
   * Aborts the call with RST_STREAM (the peer's protocol error on this stream): a handler still
   * running is told (onCancel), as for the peer's own RST_STREAM, or its call would never end.
   */
  reset(code: number): void {
    if (this.localClosed && this.remoteClosed) return;
    const wasOpen = !this.localClosed;
    this.abort(code);
    if (wasOpen) this.handler?.onCancel?.(this);
  }

  /** RST_STREAM, and the stream is forgotten. */
  private abort(code: number): void {
    this.localClosed = true;
    this.remoteClosed = true;
    this.conn.rst(this.id, code);
    this.conn.remove(this);
  }

  /** Sends queued DATA as far as both windows allow. */
  flushPending(): void {
    const conn = this.conn;
    const pending = this.pending;
    if (pending === null) return;
    while (pending.length > 0) {
      const head = pending[0]!;
      const n = Math.min(head.length, this.sendWindow, conn.sendWindow, conn.peerMaxFrame);
      if (n <= 0) return;
      conn.frame(DATA, 0, this.id, n === head.length ? head : head.subarray(0, n));
      this.sendWindow -= n;
      conn.sendWindow -= n;
      // A view of the rest rather than an offset field: the field was 8 bytes of every stream, the
      // view is made only while window is short.
      if (n === head.length) pending.shift();
      else pending[0] = head.subarray(n);
    }
    this.pending = null;
    conn.blocked--;
    if (this.pendingTrailers !== null) this.sendTrailers();
    else if (this.wantDrain && conn.backlog === null) {
      this.wantDrain = false;
      this.handler?.onDrain?.(this);
    }
  }

  /** DATA received: flow control, then gRPC message framing. */
  onData(payload: Buffer, start: number, end: number, frameLength: number, endStream: boolean): void {
    this.recvUnacked += frameLength;
    if (this.recvUnacked > RECV_WINDOW) {
      this.conn.connError(FLOW_CONTROL_ERROR);
      return;
    }
    if (!endStream && (!this.paused || this.broken) && this.recvUnacked >= WINDOW_UPDATE_AT) {
      this.conn.windowUpdate(this.id, this.recvUnacked);
      this.recvUnacked = 0;
    }
    if (this.broken) {
      if (endStream) this.onRemoteEnd();
      return;
    }
    const max = this.conn.maxMessageBytes;
    let off = start;
    while (off < end && !this.localClosed) {
      if (this.msgNeed === 0) {
        if (end - off >= 5) {
          if (payload[off] !== 0) return this.fail("compressed", 0);
          const len = payload.readUInt32BE(off + 1);
          if (len > max) return this.fail("too-large", len);
          if (end - off - 5 >= len) {
            this.handler!.onMessage(this, payload, off + 5, off + 5 + len);
            off += 5 + len;
            continue;
          }
          this.msgNeed = 5 + len;
        } else this.msgNeed = 5;
        this.msgFill = 0;
      }
      const n = Math.min(this.msgNeed - this.msgFill, end - off);
      const buf = this.hold(payload, off, n);
      off += n;
      if (this.msgFill < this.msgNeed) break;
      if (this.msgNeed === 5) {
        // Only the prefix so far: now the length is known.
        if (buf[0] !== 0) return this.fail("compressed", 0);
        const len = buf.readUInt32BE(1);
        if (len > max) return this.fail("too-large", len);
        if (len > 0) {
          this.msgNeed = 5 + len;
          continue;
        }
      }
      this.msgBuf = null;
      this.msgNeed = 0;
      this.handler!.onMessage(this, buf, 5, this.msgFill);
    }
    if (endStream) this.onRemoteEnd();
  }

  /**
   * Appends `payload[off, off + n)` to the partial message. Its buffer grows with the bytes
   * received (doubling, at most to the announced size), not to the size a 5-byte prefix announces:
   * 500 prefixes announcing 4 MiB each took 1.6 GB of address space before any body arrived.
   */
  private hold(payload: Buffer, off: number, n: number): Buffer {
    const fill = this.msgFill + n;
    let buf = this.msgBuf;
    if (buf === null || buf.length < fill) {
      const grown = Buffer.allocUnsafe(Math.min(this.msgNeed, Math.max(fill, 2 * (buf?.length ?? 0), 256)));
      if (buf !== null) buf.copy(grown, 0, 0, this.msgFill);
      this.msgBuf = buf = grown;
    }
    payload.copy(buf, this.msgFill, off, off + n);
    this.msgFill = fill;
    return buf;
  }

  onRemoteEnd(): void {
    if (this.remoteClosed) return;
    this.remoteClosed = true;
    if (this.localClosed) {
      this.conn.remove(this);
      return;
    }
    if (this.msgNeed !== 0) return this.fail("truncated", 0);
    if (this.broken) return;
    this.handler!.onHalfClose(this);
  }

  private fail(problem: "compressed" | "too-large" | "truncated", length: number): void {
    this.msgBuf = null;
    this.msgNeed = 0;
    this.broken = true;
    if (this.handler?.onInvalid) return this.handler.onInvalid(this, problem, length);
    if (problem === "compressed") this.end(12, "compressed messages are not supported");
    else if (problem === "too-large") this.end(8, `message larger than ${this.conn.maxMessageBytes} bytes`);
    else this.end(13, "stream ended inside a message");
  }
}

/** Field names that are malformed in HTTP/2 (RFC 9113 8.2.1): uppercase, controls, space, DEL and above. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: these bytes are what RFC 9113 8.2.1 rules out.
const BAD_NAME = /[\x00-\x20A-Z\x7f-\uffff]/;
/** Field values that are malformed (RFC 9113 8.2.1): NUL, CR, LF, or whitespace at either end. */
const BAD_VALUE = /[\0\r\n]|^[ \t]|[ \t]$/;
/** Connection-specific fields, malformed in HTTP/2 (RFC 9113 8.2.2); `te` is allowed as "trailers" only. */
const CONNECTION_SPECIFIC = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]);

/**
 * A request's header list checked as RFC 9113 8.2 and 8.3 say (null: malformed, a stream
 * PROTOCOL_ERROR): lowercase names, no connection-specific fields, pseudo-headers first, each once,
 * none unknown, and :method, :scheme and :path present. Once per stream, not per message.
 */
function checkRequest(fields: string[]): { path: string; method: string; contentType: string } | null {
  let path: string | undefined;
  let method: string | undefined;
  let scheme: string | undefined;
  let authority: string | undefined;
  let contentType = "";
  let regular = false;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i]!;
    const value = fields[i + 1]!;
    if (BAD_VALUE.test(value)) return null;
    if (name.charCodeAt(0) === 58) {
      // A pseudo-header: before every regular field, once, and one of the request's four.
      if (regular) return null;
      if (name === ":path") {
        if (path !== undefined || value === "") return null;
        path = value;
      } else if (name === ":method") {
        if (method !== undefined) return null;
        method = value;
      } else if (name === ":scheme") {
        if (scheme !== undefined) return null;
        scheme = value;
      } else if (name === ":authority") {
        if (authority !== undefined) return null;
        authority = value;
      } else return null;
      continue;
    }
    regular = true;
    if (name === "" || BAD_NAME.test(name) || CONNECTION_SPECIFIC.has(name) || (name === "te" && value !== "trailers")) return null;
    if (name === "content-type") contentType = value;
  }
  if (path === undefined || method === undefined || scheme === undefined) return null;
  return { path, method, contentType };
}

function writeFrameHeader(buf: Buffer, o: number, length: number, type: number, flags: number, id: number): number {
  buf[o] = length >>> 16;
  buf[o + 1] = (length >>> 8) & 0xff;
  buf[o + 2] = length & 0xff;
  buf[o + 3] = type;
  buf[o + 4] = flags;
  buf.writeUInt32BE(id, o + 5);
  return o + 9;
}

// Output: frames are written into a buffer per connection and sent with one write() per
// connection per tick (a microtask), so N messages written in one callback cost one syscall.
// A connection's first bytes of a tick go into a slice of a shared arena: most write a few small
// frames a tick (an ack, a WINDOW_UPDATE), and a pooled 16 KB buffer each, with up to 256 kept,
// was 150-400 B of RSS per vehicle at 20,000 (experiments/h2lite/mem). One that outgrows its
// slice moves to a 16 KB buffer of its own, from a small pool.
const POOL_BUFFER_BYTES = 16384;
const POOL_MAX = 32;
const pool: Buffer[] = [];
/** A slice's size: buffers of exactly this length are slices (a connection's own are 16 KB, or larger than that). */
const SLICE_BYTES = 512;
const ARENA_BYTES = 128 * 1024;
let arena: Buffer | null = null;
let arenaUsed = 0;
/** Slices not yet flushed: the arena is reused from its start once there is none. */
let slicesOut = 0;

function takeSlice(): Buffer {
  if (arena === null || arenaUsed + SLICE_BYTES > arena.length) {
    // Full: a new arena; slices of the old one stay valid until they are flushed.
    arena = Buffer.allocUnsafe(ARENA_BYTES);
    arenaUsed = 0;
  }
  const slice = arena.subarray(arenaUsed, arenaUsed + SLICE_BYTES);
  arenaUsed += SLICE_BYTES;
  slicesOut++;
  return slice;
}

function releaseSlice(): void {
  if (--slicesOut === 0) arenaUsed = 0;
}
const dirty: H2Connection[] = [];
let flushScheduled = false;

function flushAll(): void {
  flushScheduled = false;
  for (let i = 0; i < dirty.length; i++) dirty[i]!.flush();
  dirty.length = 0;
}

/**
 * A header block in progress: its stream, its fragments so far (copies: a socket chunk is not ours
 * after its callback; joined once at END_HEADERS), their bytes and its CONTINUATIONs.
 */
interface HeaderBlock {
  stream: number;
  endStream: boolean;
  parts: Buffer[];
  bytes: number;
  frames: number;
}

export class H2Connection {
  private inBuf: Buffer | null = null;
  private prefaceSeen = false;
  private readonly hpack: HpackDecoder;
  /**
   * The open streams: the first in `call`, any others in `calls`, made on the second. A vehicle's
   * connection holds one stream, and a Map with one entry costs ~260 B of heap (its storage is a
   * 224-byte cell): a quarter of lib/h2's JS heap per such connection.
   */
  private call: Call | null = null;
  private calls: Map<number, Call> | null = null;
  private lastStreamId = 0;
  sendWindow = 65535;
  peerInitialWindow = 65535;
  peerMaxFrame = 16384;
  private recvUnacked = 0;
  /**
   * Header block in progress (HEADERS without END_HEADERS), until its CONTINUATIONs: an object of
   * its own, made then, since its five fields on the connection took it past 256 bytes of heap.
   */
  private hdr: HeaderBlock | null = null;
  wbuf: Buffer | null = null;
  wlen = 0;
  /** Offset in `wbuf` of the last frame when it is DATA of `lastDataStream` (else -1): later messages extend it. */
  lastDataOff = -1;
  lastDataStream = 0;
  private inDirty = false;
  /** Bytes the socket did not take; sent on drain. */
  backlog: Buffer | null = null;
  /** Calls with DATA waiting for window. */
  blocked = 0;
  /** GOAWAY was sent or received: no new streams. */
  goingAway = false;
  closed = false;
  /** Date.now() of the last bytes received (the server's idle sweep reads it); before a TLS handshake, of the accept. */
  lastActive = Date.now();
  /**
   * The socket can carry frames: false until a TLS handshake completes (what is written before
   * waits in `backlog`, as for a socket that does not take it).
   */
  ready: boolean;
  /** Flood budgets: control frames and resets counted since `budgetStart` (ms). */
  private budgetStart = 0;
  private controlFrames = 0;
  private resets = 0;

  constructor(
    readonly socket: Socket<H2Connection>,
    private readonly server: H2Server,
    ready = true,
  ) {
    this.ready = ready;
    this.hpack = new HpackDecoder(4096, server.maxHeaderListSize);
    // Server preface: our SETTINGS.
    const s = Buffer.allocUnsafe(12);
    s.writeUInt16BE(3, 0); // MAX_CONCURRENT_STREAMS
    s.writeUInt32BE(server.maxConcurrentStreams, 2);
    s.writeUInt16BE(6, 6); // MAX_HEADER_LIST_SIZE
    s.writeUInt32BE(server.maxHeaderListSize, 8);
    this.frame(SETTINGS, 0, 0, s);
  }

  get maxMessageBytes(): number {
    return this.server.maxMessageBytes;
  }

  private callOf(id: number): Call | undefined {
    const call = this.call;
    if (call !== null && call.id === id) return call;
    return this.calls?.get(id);
  }

  private get openCount(): number {
    return (this.call === null ? 0 : 1) + (this.calls?.size ?? 0);
  }

  /** The open streams, in a new array (for the rare walks over all of them: SETTINGS, window, drain, close). */
  private openCalls(): Call[] {
    const out = this.call === null ? [] : [this.call];
    if (this.calls !== null) for (const call of this.calls.values()) out.push(call);
    return out;
  }

  // --- output ---

  /** Room for `n` more bytes in the output buffer; returns it (write at `wlen`). */
  reserve(n: number): Buffer {
    const buf = this.wbuf;
    if (buf !== null && this.wlen + n > buf.length) {
      if (buf.length === SLICE_BYTES && this.wlen + n <= POOL_BUFFER_BYTES) {
        // Outgrew its slice: what it holds moves to a buffer of its own (offsets kept, lastDataOff too).
        const own = pool.pop() ?? Buffer.allocUnsafe(POOL_BUFFER_BYTES);
        buf.copy(own, 0, 0, this.wlen);
        releaseSlice();
        this.wbuf = own;
        return own;
      }
      this.flush();
    }
    if (this.wbuf === null) {
      this.wbuf =
        n <= SLICE_BYTES
          ? takeSlice()
          : n <= POOL_BUFFER_BYTES
            ? (pool.pop() ?? Buffer.allocUnsafe(POOL_BUFFER_BYTES))
            : Buffer.allocUnsafe(n);
      this.wlen = 0;
      if (!this.inDirty) {
        this.inDirty = true;
        dirty.push(this);
        if (!flushScheduled) {
          flushScheduled = true;
          queueMicrotask(flushAll);
        }
      }
    }
    return this.wbuf;
  }

  /** A header block: HEADERS, then CONTINUATIONs when it is longer than the peer's largest frame. */
  headers(id: number, flags: number, block: Buffer): void {
    if (block.length <= this.peerMaxFrame) return this.frame(HEADERS, flags | FLAG_END_HEADERS, id, block);
    let off = 0;
    while (off < block.length) {
      const n = Math.min(this.peerMaxFrame, block.length - off);
      const last = off + n === block.length;
      this.frame(
        off === 0 ? HEADERS : CONTINUATION,
        (off === 0 ? flags : 0) | (last ? FLAG_END_HEADERS : 0),
        id,
        block.subarray(off, off + n),
      );
      off += n;
    }
  }

  frame(type: number, flags: number, id: number, payload?: Uint8Array): void {
    const len = payload ? payload.length : 0;
    const buf = this.reserve(9 + len);
    const o = writeFrameHeader(buf, this.wlen, len, type, flags, id);
    if (payload) buf.set(payload, o);
    this.wlen = o + len;
    this.lastDataOff = -1;
  }

  flush(): void {
    this.inDirty = false;
    const buf = this.wbuf;
    if (buf === null) return;
    const len = this.wlen;
    this.wbuf = null;
    this.wlen = 0;
    this.lastDataOff = -1;
    if (!this.closed) {
      if (this.backlog !== null) this.backlog = Buffer.concat([this.backlog, buf.subarray(0, len)]);
      else if (!this.ready) this.backlog = Buffer.from(buf.subarray(0, len));
      else {
        const n = this.socket.write(buf, 0, len);
        this.server.writes++;
        if (n < len && n >= 0) this.backlog = Buffer.from(buf.subarray(n, len));
      }
    }
    if (buf.length === SLICE_BYTES) releaseSlice();
    else if (buf.length === POOL_BUFFER_BYTES && pool.length < POOL_MAX) pool.push(buf);
    // A peer that stopped reading (while it still sends, or with PINGs answered for it) is cut,
    // not buffered for without bound.
    if (this.backlog !== null && this.backlog.length > this.server.maxBufferedBytes && !this.closed) {
      this.server.onEvent?.("unread", this.backlog.length);
      this.backlog = null;
      this.closed = true;
      this.socket.terminate();
      this.onClose();
    }
  }

  /** The TLS handshake completed: what waited (our SETTINGS) goes out. */
  onHandshake(): void {
    this.ready = true;
    this.onDrain();
  }

  onDrain(): void {
    if (this.backlog === null || !this.ready) return;
    const n = this.socket.write(this.backlog);
    if (n < 0) return;
    if (n < this.backlog.length) {
      this.backlog = this.backlog.subarray(n);
      return;
    }
    this.backlog = null;
    for (const call of this.openCalls()) {
      if (call.wantDrain && call.pending === null) {
        call.wantDrain = false;
        call.handler?.onDrain?.(call);
      }
    }
  }

  rst(id: number, code: number): void {
    const p = Buffer.allocUnsafe(4);
    p.writeUInt32BE(code, 0);
    this.frame(RST_STREAM, 0, id, p);
  }

  windowUpdate(id: number, increment: number): void {
    const p = Buffer.allocUnsafe(4);
    p.writeUInt32BE(increment, 0);
    this.frame(WINDOW_UPDATE, 0, id, p);
  }

  remove(call: Call): void {
    if (this.call === call) this.call = null;
    else if (this.calls?.get(call.id) === call) this.calls.delete(call.id);
    else return;
    if (call.pending !== null) {
      call.pending = null;
      this.blocked--;
    }
    if (this.goingAway && this.openCount === 0) this.close();
  }

  /**
   * Graceful close (drain, idle): GOAWAY NO_ERROR naming the last stream taken; streams already
   * open go on, new ones are refused, and the connection closes once the last one ended.
   */
  goAway(): void {
    if (this.closed || this.goingAway) return;
    this.goingAway = true;
    const p = Buffer.allocUnsafe(8);
    p.writeUInt32BE(this.lastStreamId, 0);
    p.writeUInt32BE(H2_NO_ERROR, 4);
    this.frame(GOAWAY, 0, 0, p);
    if (this.openCount === 0) this.close();
  }

  /** Counts a frame against the peer's per-second budget; false (and the connection ended) past it. */
  private spend(reset: boolean): boolean {
    const now = Date.now();
    if (now - this.budgetStart >= 1000) {
      this.budgetStart = now;
      this.controlFrames = 0;
      this.resets = 0;
    }
    if (++this.controlFrames <= this.server.maxControlFramesPerSecond && (!reset || ++this.resets <= this.server.maxResetsPerSecond))
      return true;
    this.server.onEvent?.("flood", reset ? this.resets : this.controlFrames);
    this.connError(ENHANCE_YOUR_CALM);
    return false;
  }

  /** Connection error: GOAWAY with `code`, then close. */
  connError(code: number): void {
    if (this.closed) return;
    const p = Buffer.allocUnsafe(8);
    p.writeUInt32BE(this.lastStreamId, 0);
    p.writeUInt32BE(code, 4);
    this.frame(GOAWAY, 0, 0, p);
    this.close();
  }

  private close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    // Before a TLS handshake nothing can be sent, and end() would wait for it.
    if (this.ready) this.socket.end();
    else this.socket.terminate();
    this.onClose();
  }

  onClose(): void {
    this.server.connections.delete(this);
    this.closed = true;
    this.inBuf = null;
    this.hdr = null;
    const calls = this.openCalls();
    this.call = null;
    this.calls = null;
    for (const call of calls) {
      if (!call.localClosed) {
        call.localClosed = true;
        call.handler?.onCancel?.(call);
      }
    }
  }

  // --- input ---

  onData(chunk: Buffer): void {
    if (this.closed) return;
    this.lastActive = Date.now();
    let buf = chunk;
    if (this.inBuf !== null) {
      buf = Buffer.concat([this.inBuf, chunk]);
      this.inBuf = null;
    }
    let off = 0;
    if (!this.prefaceSeen) {
      if (buf.length < 24) {
        if (!PREFACE.subarray(0, buf.length).equals(buf)) return this.connError(PROTOCOL_ERROR);
        this.inBuf = Buffer.from(buf);
        return;
      }
      if (!PREFACE.equals(buf.subarray(0, 24))) return this.connError(PROTOCOL_ERROR);
      this.prefaceSeen = true;
      off = 24;
    }
    const end = buf.length;
    while (end - off >= 9 && !this.closed) {
      const len = (buf[off]! << 16) | (buf[off + 1]! << 8) | buf[off + 2]!;
      if (len > MAX_FRAME_SIZE) return this.connError(FRAME_SIZE_ERROR);
      if (end - off - 9 < len) break;
      const type = buf[off + 3]!;
      const flags = buf[off + 4]!;
      const id = buf.readUInt32BE(off + 5) & 0x7fffffff;
      this.onFrame(buf, type, flags, id, off + 9, off + 9 + len);
      off += 9 + len;
    }
    // Keep only an incomplete frame, copied: the socket's chunk is not ours after this callback.
    if (off < end && !this.closed) this.inBuf = Buffer.from(buf.subarray(off));
  }

  private onFrame(buf: Buffer, type: number, flags: number, id: number, start: number, end: number): void {
    const len = end - start;
    if (this.hdr !== null && (type !== CONTINUATION || id !== this.hdr.stream)) return this.connError(PROTOCOL_ERROR);
    switch (type) {
      case DATA: {
        if (id === 0) return this.connError(PROTOCOL_ERROR);
        if (len === 0 && !(flags & FLAG_END_STREAM) && !this.spend(false)) return;
        this.recvUnacked += len;
        if (this.recvUnacked > RECV_WINDOW) return this.connError(FLOW_CONTROL_ERROR);
        if (this.recvUnacked >= WINDOW_UPDATE_AT) {
          this.windowUpdate(0, this.recvUnacked);
          this.recvUnacked = 0;
        }
        let s = start;
        let e = end;
        if (flags & FLAG_PADDED) {
          if (len < 1) return this.connError(PROTOCOL_ERROR);
          const pad = buf[start]!;
          s++;
          e -= pad;
          if (e < s) return this.connError(PROTOCOL_ERROR);
        }
        const call = this.callOf(id);
        if (call === undefined) {
          if (id > this.lastStreamId) return this.connError(PROTOCOL_ERROR); // idle stream
          // A stream we closed or reset: its bytes were counted above. A client still sending after
          // our trailers is asked to stop (RFC 9113 8.1: RST_STREAM NO_ERROR), charged to the
          // control-frame budget; its last DATA (END_STREAM) needs no answer.
          if (!(flags & FLAG_END_STREAM) && this.spend(false)) this.rst(id, H2_NO_ERROR);
          return;
        }
        if (call.remoteClosed) return call.reset(STREAM_CLOSED);
        call.onData(buf, s, e, len, (flags & FLAG_END_STREAM) !== 0);
        return;
      }
      case HEADERS: {
        if (id === 0) return this.connError(PROTOCOL_ERROR);
        let s = start;
        let e = end;
        if (flags & FLAG_PADDED) {
          if (len < 1) return this.connError(PROTOCOL_ERROR);
          e -= buf[start]!;
          s++;
        }
        if (flags & FLAG_PRIORITY) s += 5;
        if (e < s) return this.connError(PROTOCOL_ERROR);
        const endStream = (flags & FLAG_END_STREAM) !== 0;
        if (flags & FLAG_END_HEADERS) return this.onHeaderBlock(id, endStream, buf.subarray(s, e));
        this.hdr = { stream: id, endStream, parts: [Buffer.from(buf.subarray(s, e))], bytes: e - s, frames: 0 };
        return;
      }
      case CONTINUATION: {
        const hdr = this.hdr;
        if (hdr === null || id !== hdr.stream) return this.connError(PROTOCOL_ERROR);
        // A header block is bounded by our header-list limit, and by a number of frames: a client
        // splits a block only past the largest frame (16 KB), so even a block at the byte bound
        // takes 2 CONTINUATIONs. Endless, empty or tiny ones are a flood (as nghttp2's cap of 8
        // for CVE-2024-28182); each fragment is kept once and the block joined once at its end.
        const parts = hdr.parts;
        hdr.bytes += len;
        if (hdr.bytes > 2 * this.server.maxHeaderListSize || ++hdr.frames > MAX_CONTINUATIONS) {
          this.server.onEvent?.("flood", hdr.frames);
          return this.connError(ENHANCE_YOUR_CALM);
        }
        if (len > 0) parts.push(Buffer.from(buf.subarray(start, end)));
        if (flags & FLAG_END_HEADERS) {
          const block = parts.length === 1 ? parts[0]! : Buffer.concat(parts, hdr.bytes);
          this.hdr = null;
          this.onHeaderBlock(id, hdr.endStream, block);
        }
        return;
      }
      case PRIORITY:
        if (id === 0) return this.connError(PROTOCOL_ERROR);
        if (len !== 5) return this.connError(FRAME_SIZE_ERROR);
        this.spend(false);
        return;
      case RST_STREAM: {
        if (id === 0) return this.connError(PROTOCOL_ERROR);
        if (len !== 4) return this.connError(FRAME_SIZE_ERROR);
        const call = this.callOf(id);
        if (call === undefined) {
          if (id > this.lastStreamId) return this.connError(PROTOCOL_ERROR);
          this.spend(false);
          return;
        }
        // A stream reset while open cost its start (a call through auth): rapid reset is a flood.
        if (!this.spend(true)) return;
        this.remove(call);
        if (!call.localClosed) {
          call.localClosed = true;
          call.remoteClosed = true;
          call.handler?.onCancel?.(call);
        }
        return;
      }
      case SETTINGS: {
        if (id !== 0) return this.connError(PROTOCOL_ERROR);
        if (flags & FLAG_ACK) {
          if (len !== 0) return this.connError(FRAME_SIZE_ERROR);
          return;
        }
        if (len % 6 !== 0) return this.connError(FRAME_SIZE_ERROR);
        if (!this.spend(false)) return;
        // The window's change is applied to the streams once per frame, not once per entry: a
        // frame of 2,730 INITIAL_WINDOW_SIZE entries would otherwise walk every stream 2,730 times.
        const before = this.peerInitialWindow;
        for (let o = start; o < end; o += 6) {
          const key = buf.readUInt16BE(o);
          const value = buf.readUInt32BE(o + 2);
          if (key === 4) {
            if (value > MAX_WINDOW) return this.connError(FLOW_CONTROL_ERROR);
            this.peerInitialWindow = value;
          } else if (key === 5) {
            if (value < 16384 || value > 16777215) return this.connError(PROTOCOL_ERROR);
            this.peerMaxFrame = value;
          } else if (key === 2 && value > 1) return this.connError(PROTOCOL_ERROR);
        }
        const delta = this.peerInitialWindow - before;
        if (delta !== 0) {
          for (const call of this.openCalls()) {
            call.sendWindow += delta;
            if (call.sendWindow > MAX_WINDOW) return this.connError(FLOW_CONTROL_ERROR);
          }
        }
        this.frame(SETTINGS, FLAG_ACK, 0);
        if (this.blocked > 0) this.flushBlocked();
        return;
      }
      case PING:
        if (id !== 0) return this.connError(PROTOCOL_ERROR);
        if (len !== 8) return this.connError(FRAME_SIZE_ERROR);
        if (!this.spend(false)) return;
        if (!(flags & FLAG_ACK)) this.frame(PING, FLAG_ACK, 0, buf.subarray(start, end));
        return;
      case GOAWAY:
        if (id !== 0) return this.connError(PROTOCOL_ERROR);
        this.goingAway = true;
        if (this.openCount === 0) this.close();
        return;
      case WINDOW_UPDATE: {
        if (len !== 4) return this.connError(FRAME_SIZE_ERROR);
        const inc = buf.readUInt32BE(start) & 0x7fffffff;
        if (id === 0) {
          if (inc === 0) return this.connError(PROTOCOL_ERROR);
          this.sendWindow += inc;
          if (this.sendWindow > MAX_WINDOW) return this.connError(FLOW_CONTROL_ERROR);
          if (this.blocked > 0) this.flushBlocked();
          return;
        }
        const call = this.callOf(id);
        if (call === undefined) {
          if (id > this.lastStreamId) return this.connError(PROTOCOL_ERROR); // idle stream (RFC 9113 5.1)
          return;
        }
        if (inc === 0) return call.reset(PROTOCOL_ERROR);
        call.sendWindow += inc;
        if (call.sendWindow > MAX_WINDOW) return call.reset(FLOW_CONTROL_ERROR);
        call.flushPending();
        return;
      }
      case PUSH_PROMISE:
        return this.connError(PROTOCOL_ERROR);
      default:
        this.spend(false);
        return; // unknown frame types are ignored (RFC 9113 §4.1)
    }
  }

  private flushBlocked(): void {
    for (const call of this.openCalls()) {
      if (this.sendWindow <= 0) return;
      if (call.pending !== null) call.flushPending();
    }
  }

  private onHeaderBlock(id: number, endStream: boolean, block: Buffer): void {
    const fields: string[] = [];
    let within: boolean;
    try {
      within = this.hpack.decode(block, fields);
    } catch (err) {
      if (err instanceof HpackError) return this.connError(COMPRESSION_ERROR);
      throw err;
    }
    const existing = this.callOf(id);
    if (existing !== undefined) {
      // Trailers from the client: must end the stream.
      if (!endStream || existing.remoteClosed) return existing.reset(PROTOCOL_ERROR);
      existing.onRemoteEnd();
      return;
    }
    // A new stream's id must exceed every earlier one (RFC 9113 5.1.1); as Go's server, HEADERS on
    // a stream no longer open is taken for that too (gRPC clients send no trailers).
    if (id <= this.lastStreamId || id % 2 === 0) return this.connError(PROTOCOL_ERROR);
    this.lastStreamId = id;
    if (this.goingAway || this.openCount >= this.server.maxConcurrentStreams) return this.rst(id, REFUSED_STREAM);
    let path = "";
    let method = "";
    let contentType = "";
    if (within) {
      const request = checkRequest(fields);
      if (request === null) return this.rst(id, PROTOCOL_ERROR);
      path = request.path;
      method = request.method;
      contentType = request.contentType;
    }
    const call = new Call(this, id);
    if (this.call === null) this.call = call;
    else (this.calls ??= new Map()).set(id, call);
    if (!within) {
      call.end(
        8,
        `request headers larger than ${this.server.maxHeaderListSize} bytes (SETTINGS_MAX_HEADER_LIST_SIZE): send fewer or shorter metadata`,
      );
    } else if (method !== "POST" || !contentType.startsWith("application/grpc")) {
      call.end(13, "expected a gRPC request (POST, content-type application/grpc)");
    } else {
      const handler = this.server.route(path);
      if (handler === undefined) call.end(12, this.server.unknownMethod(path));
      else {
        call.handler = handler;
        handler.onOpen?.(call, fields);
      }
    }
    if (endStream && !call.localClosed) call.onRemoteEnd();
    else if (endStream) this.remove(call);
  }
}

export class H2Server {
  readonly maxConcurrentStreams: number;
  readonly maxMessageBytes: number;
  readonly maxHeaderListSize: number;
  readonly maxConnections: number;
  readonly idleTimeoutMs: number;
  readonly handshakeTimeoutMs: number;
  readonly maxBufferedBytes: number;
  readonly maxControlFramesPerSecond: number;
  readonly maxResetsPerSecond: number;
  readonly onEvent: H2Options["onEvent"];
  /** The grpc-message of a call to a path no handler serves. */
  unknownMethod: (path: string) => string = (path) => `unknown method ${path}`;
  readonly connections = new Set<H2Connection>();
  /** socket.write() calls so far (a connection's frames of one event-loop turn go in one). */
  writes = 0;
  listener: TCPSocketListener<H2Connection> | undefined;
  private refused = 0;
  private sweep: ReturnType<typeof setInterval> | undefined;

  constructor(
    readonly route: Router,
    options: H2Options = {},
  ) {
    this.maxConcurrentStreams = options.maxConcurrentStreams ?? 100;
    this.maxMessageBytes = options.maxMessageBytes ?? 4 * 1024 * 1024;
    this.maxHeaderListSize = options.maxHeaderListSize ?? 16384;
    this.maxConnections = options.maxConnections ?? 10_000;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 0;
    this.handshakeTimeoutMs = Math.min(options.handshakeTimeoutMs ?? 10_000, this.idleTimeoutMs || Number.POSITIVE_INFINITY);
    this.maxBufferedBytes = options.maxBufferedBytes ?? 1024 * 1024;
    this.maxControlFramesPerSecond = options.maxControlFramesPerSecond ?? 1000;
    this.maxResetsPerSecond = options.maxResetsPerSecond ?? 200;
    this.onEvent = options.onEvent;
  }

  /**
   * `tls`: PEM cert and key; ALPN then offers only "h2" (gRPC clients ask for it). `reusePort`:
   * SO_REUSEPORT, so that several processes share the port.
   */
  listen(
    hostname: string,
    port: number,
    tls?: { cert: string | Buffer; key: string | Buffer },
    reusePort = false,
  ): TCPSocketListener<H2Connection> {
    const server = this;
    // With a `handshake` handler, Bun calls `open` at accept rather than after the TLS handshake
    // (bun-types' SocketHandler.open): a connection that never completes one is then counted
    // against maxConnections and swept; without it such connections were held, unseen, forever.
    const handshake = tls
      ? {
          handshake(socket: Socket<H2Connection>, success: boolean) {
            if (!success) socket.terminate();
            else socket.data?.onHandshake();
          },
        }
      : {};
    this.listener = Bun.listen<H2Connection>({
      hostname,
      port,
      // Not in bun-types' TCPSocketListenOptions, but honoured by Bun 1.4.5 (two listeners with it share a port).
      ...({ reusePort } as object),
      tls: tls ? { cert: tls.cert, key: tls.key, ALPNProtocols: Buffer.from([2, 0x68, 0x32]) } : undefined,
      socket: {
        open(socket) {
          if (server.connections.size >= server.maxConnections) {
            server.onEvent?.("refused", ++server.refused);
            socket.terminate();
            return;
          }
          socket.setNoDelay(true);
          const conn = new H2Connection(socket, server, tls === undefined);
          socket.data = conn;
          server.connections.add(conn);
        },
        data(socket, chunk) {
          socket.data?.onData(chunk);
        },
        drain(socket) {
          socket.data?.onDrain();
        },
        close(socket) {
          socket.data?.onClose();
        },
        error(socket) {
          socket.data?.onClose();
        },
        ...handshake,
      },
    });
    if (this.idleTimeoutMs > 0 || tls) {
      // One sweep for all connections rather than a timer each (memory per connection is the point).
      const every = Math.min(this.idleTimeoutMs || Number.POSITIVE_INFINITY, tls ? this.handshakeTimeoutMs : Number.POSITIVE_INFINITY);
      this.sweep = setInterval(() => this.closeIdle(), Math.max(100, Math.min(every / 4, 5000)));
      this.sweep.unref();
    }
    return this.listener;
  }

  /**
   * Idle for idleTimeoutMs: GOAWAY (its streams may finish). Still there, and silent, after twice
   * that: cut, since a stream can outlive GOAWAY only with output its peer never takes.
   */
  private closeIdle(): void {
    const now = Date.now();
    for (const conn of this.connections) {
      if (!conn.ready) {
        // No TLS handshake yet: nothing can be said to it (no GOAWAY).
        if (conn.lastActive < now - this.handshakeTimeoutMs) {
          conn.socket.terminate();
          conn.onClose();
        }
        continue;
      }
      if (this.idleTimeoutMs === 0 || conn.lastActive >= now - this.idleTimeoutMs) continue;
      if (!conn.goingAway) conn.goAway();
      else if (conn.lastActive < now - 2 * this.idleTimeoutMs) {
        conn.socket.terminate();
        conn.onClose();
      }
    }
  }

  /** Stops listening and sends every connection GOAWAY: open streams go on, new ones are refused. */
  stopAccepting(): void {
    this.listener?.stop(false);
    for (const conn of this.connections) conn.goAway();
  }

  /** Resolves true once every connection has closed, false after `timeoutMs`. */
  async settled(timeoutMs: number): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    while (this.connections.size > 0) {
      if (Date.now() >= until) return false;
      await Bun.sleep(20);
    }
    return true;
  }

  /** Stops listening and cuts every connection (their calls are cancelled). */
  close(): void {
    clearInterval(this.sweep);
    this.listener?.stop(true);
    for (const conn of [...this.connections]) {
      conn.socket.terminate();
      conn.onClose();
    }
  }
}
