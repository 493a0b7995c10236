import type http2 from "node:http2";
import type { Message } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { MessageDecoder, MessageInput, MessageSink } from "./input";
import { tooLargeMessage } from "./wire";

type AnyInput = MessageInput<Message>;

const INPUT = Symbol("native gRPC input");
type InputStream = http2.ServerHttp2Stream & { [INPUT]?: FramedInput };

// Module-level listeners that find their input through the stream: no closures per call.
function onStreamData(this: InputStream, chunk: Buffer): void {
  this[INPUT]?.onData(chunk);
}
function onStreamEnd(this: InputStream): void {
  this[INPUT]?.onEnd();
}

const COMPRESSED = 0b1;

/**
 * The request side of one native call: reassembles length-prefixed messages across DATA chunks,
 * enforces the size limit and refuses compressed messages before buffering them, and pushes each
 * decoded message to the sink while not paused.
 *
 * Chunks are kept in a list, as connect-es's envelope reader does, and a message is copied out once
 * when it is complete: concatenating the held bytes with each new chunk cost O(n²), and a client
 * sending 256 KiB in 1-byte DATA frames held the event loop for seconds. A message that lies in one
 * chunk (the usual case) is decoded in place, with no copy.
 */
export class FramedInput implements AnyInput {
  private sink: MessageSink<Message> | undefined;
  /** Bytes received and not yet delivered (a partial message, or messages held while paused). */
  private chunks: Buffer[] = [];
  /** Index of the first chunk still held, and how far into it delivery got. */
  private head = 0;
  private offset = 0;
  /** Bytes held in `chunks` past `offset`. */
  private queued = 0;
  private paused = false;
  private stopped = false;
  /** The client half-closed. */
  private ended = false;
  /** end or error was delivered. */
  private done = false;
  /** A protocol error found before the handler started reading. */
  private failure: unknown;
  /** Inside pump(): a resume() from a handler must not start a second, nested one. */
  private pumping = false;

  constructor(
    private readonly stream: http2.ServerHttp2Stream,
    private readonly decode: MessageDecoder<Message>,
    private readonly maxBytes: number,
  ) {}

  start(sink: MessageSink<Message>): void {
    this.sink = sink;
    if (this.failure !== undefined) return this.fail(this.failure);
    if (this.paused) this.stream.pause();
    (this.stream as InputStream)[INPUT] = this;
    this.stream.on("data", onStreamData);
    this.stream.on("end", onStreamEnd);
  }

  pause(): void {
    if (this.paused) return;
    this.paused = true;
    if (this.sink) this.stream.pause();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (!this.sink || this.stopped || this.done) return;
    // Resumed from inside a delivery, the running pump goes on by itself.
    if (!this.pumping) this.pump();
    if (!this.paused) this.stream.resume();
  }

  stop(): void {
    this.stopped = true;
    this.clear();
  }

  /** Fails the stream (protocol error, reset, deadline); before `start`, the handler gets it on start. */
  fail(err: unknown): void {
    if (this.stopped || this.done) return;
    if (!this.sink) {
      this.failure ??= err;
      return;
    }
    this.done = true;
    this.clear();
    this.sink.error(err);
  }

  onData(chunk: Buffer): void {
    if (this.stopped || this.done || chunk.length === 0) return;
    this.chunks.push(chunk);
    this.queued += chunk.length;
    this.pump();
  }

  onEnd(): void {
    // Bun ends the inbound side before it reports a client's RST_STREAM ('aborted'): wait a
    // turn, so that a cancelled call fails as cancelled instead of ending as a half-close.
    setImmediate(() => {
      this.ended = true;
      if (!this.stopped && !this.done && !this.stream.aborted) this.pump();
    });
  }

  private clear(): void {
    this.chunks = [];
    this.head = 0;
    this.offset = 0;
    this.queued = 0;
  }

  /** Drops `n` held bytes from the front. */
  private consume(n: number): void {
    this.queued -= n;
    while (n > 0) {
      const left = this.chunks[this.head]!.length - this.offset;
      if (n < left) {
        this.offset += n;
        return;
      }
      n -= left;
      this.head++;
      this.offset = 0;
    }
    if (this.head === this.chunks.length) {
      this.chunks = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
  }

  /** Copies the first `n` held bytes into one buffer; `drop` also consumes them. */
  private copy(n: number, drop: boolean): Buffer {
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    let i = this.head;
    let from = this.offset;
    while (at < n) {
      const c = this.chunks[i++]!;
      const take = Math.min(n - at, c.length - from);
      c.copy(out, at, from, from + take);
      at += take;
      from = 0;
    }
    if (drop) this.consume(n);
    return out;
  }

  /** Delivers what is held, until it is empty or the handler pauses or stops. */
  private pump(): void {
    this.pumping = true;
    try {
      this.deliver();
    } finally {
      this.pumping = false;
    }
  }

  private deliver(): void {
    while (!this.paused && !this.stopped && !this.done && this.queued >= 5) {
      let first = this.chunks[this.head]!;
      let at = this.offset;
      if (first.length - at < 5) {
        first = this.copy(5, false);
        at = 0;
      }
      const flags = first[at]!;
      const len = first.readUInt32BE(at + 1);
      if ((flags & COMPRESSED) !== 0) {
        return this.fail(new ConnectError("received compressed envelope, but do not know how to decompress", Code.Internal));
      }
      if (len > this.maxBytes) {
        return this.fail(new ConnectError(tooLargeMessage(len, this.maxBytes), Code.ResourceExhausted));
      }
      if (this.queued - 5 < len) break;
      let buf = this.chunks[this.head]!;
      let start = this.offset + 5;
      if (buf.length - this.offset >= 5 + len) this.consume(5 + len);
      else {
        buf = this.copy(5 + len, true);
        start = 5;
      }
      let message: Message;
      try {
        message = this.decode(buf, start, start + len);
      } catch (err) {
        return this.fail(new ConnectError(`parse binary: ${(err as Error).message}`, Code.InvalidArgument));
      }
      this.sink!.message(message);
    }
    if (this.stopped || this.done) return;
    if (this.ended && !this.paused) {
      if (this.queued > 0) return this.fail(new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument));
      this.done = true;
      this.sink!.end();
    }
  }
}
