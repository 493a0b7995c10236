import type http2 from "node:http2";
import { create, toBinary, type DescMessage, type Message, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { MessageEncoder } from "./input";
import { headersObject } from "./wire";

/** Bytes written and not yet flushed past which a native call's handler waits (see `writable`). */
const WRITE_HIGH_WATER = 64 * 1024;

/**
 * One response message's protobuf bytes, with the project's encoder when the method has one;
 * larger than `maxBytes` is RESOURCE_EXHAUSTED naming the limit. Both native outputs (this one on
 * node:http2 and the vehicle port's on lib/h2) encode through it.
 */
export function encodeResponse(
  init: MessageInitShape<DescMessage>,
  schema: DescMessage,
  encode: MessageEncoder<Message> | undefined,
  maxBytes: number,
): Uint8Array {
  const bytes = encode ? encode(init as Message) : toBinary(schema, create(schema, init));
  if (bytes.length > maxBytes) {
    throw new ConnectError(`message size ${bytes.length} is larger than configured writeMaxBytes ${maxBytes}`, Code.ResourceExhausted);
  }
  return bytes;
}

/** The response side of one native call: headers on the first message, then trailers (or trailers only). */
export class FramedOutput {
  private headersSent = false;
  /**
   * Unflushed bytes are counted through write callbacks, which Bun calls once the bytes went out:
   * its write() keeps returning true for a client that stopped reading, so it cannot tell the
   * handler to wait. A callback per write cost the gateway's acks ~5 ms of p99; callbacks come in
   * write order, so one every `highWater / 4` bytes (and on the write that reaches the high-water
   * mark, which is the one a waiting handler needs) says as much, overstating by at most that.
   */
  private written = 0;
  private flushed = 0;
  private trackedUpTo = 0;
  private waiter: (() => void) | undefined;

  constructor(
    private readonly stream: http2.ServerHttp2Stream,
    private readonly schema: DescMessage,
    private readonly maxBytes: number,
    private readonly encode: MessageEncoder<Message> | undefined,
    private readonly highWater = WRITE_HIGH_WATER,
  ) {}

  private get gone(): boolean {
    return this.stream.closed || this.stream.destroyed;
  }

  message(init: MessageInitShape<DescMessage>, headers: Headers): void {
    const bytes = encodeResponse(init, this.schema, this.encode, this.maxBytes);
    if (this.gone) return;
    if (!this.headersSent) {
      this.headersSent = true;
      // node:http2's compatibility response (created for every stream) would send its own, empty,
      // trailers when the stream asks for them; this call sends its own.
      this.stream.removeAllListeners("wantTrailers");
      this.stream.respond(headersObject({ ":status": 200 }, headers), { waitForTrailers: true });
    }
    const frame = Buffer.allocUnsafe(5 + bytes.length);
    frame[0] = 0;
    frame.writeUInt32BE(bytes.length, 1);
    frame.set(bytes, 5);
    const end = (this.written += frame.length);
    if (end - this.trackedUpTo < this.highWater / 4 && end - this.flushed < this.highWater) {
      this.stream.write(frame);
      return;
    }
    this.trackedUpTo = end;
    this.stream.write(frame, () => {
      if (end > this.flushed) this.flushed = end;
      if (this.written - this.flushed < this.highWater) this.wake();
    });
  }

  /** Resolves once the client took enough of what was written (or the stream is gone). */
  writable(): Promise<void> | undefined {
    if (this.written - this.flushed < this.highWater || this.gone) return undefined;
    this.stream.once("close", this.wake);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  private wake = (): void => {
    const w = this.waiter;
    this.waiter = undefined;
    if (!w) return;
    this.stream.off("close", this.wake);
    w();
  };

  end(headers: Headers, trailers: http2.OutgoingHttpHeaders): void {
    if (this.gone) return;
    if (!this.headersSent) {
      // Trailers-only: status in the one HEADERS frame, which ends the stream.
      this.headersSent = true;
      this.stream.removeAllListeners("wantTrailers");
      this.stream.respond({ ...headersObject({ ":status": 200 }, headers), ...trailers }, { endStream: true });
      return;
    }
    this.stream.once("wantTrailers", () => {
      if (!this.gone) this.stream.sendTrailers(trailers);
    });
    this.stream.end();
  }
}
