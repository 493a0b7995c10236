/**
 * The native path's request framing (framed-input.ts): gRPC's length-prefixed messages read the same
 * however HTTP/2 cuts them into DATA chunks, as binary-export.test.ts proves for COPY rows.
 */
import { EventEmitter } from "node:events";
import type http2 from "node:http2";
import type { Message } from "@bufbuild/protobuf";
import { Code, type ConnectError } from "@connectrpc/connect";
import { expect, test } from "bun:test";
import { FramedInput } from "./framed-input";

/**
 * What FramedInput uses of a ServerHttp2Stream: 'data' and 'end' events, pause/resume and `aborted`.
 * The chunks are given here instead of by an HTTP/2 peer, so that every cut can be tried.
 */
class ChunkStream extends EventEmitter {
  aborted = false;
  paused = false;
  pause(): this {
    this.paused = true;
    return this;
  }
  resume(): this {
    this.paused = false;
    return this;
  }
}

/** One gRPC envelope: flags, big-endian length, the message. */
function envelope(message: Uint8Array, flags = 0): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

const bytes = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));

// Several messages: an empty one, one larger than any chunk tried below, one of a byte.
const MESSAGES = [bytes(3, 1), Buffer.alloc(0), bytes(300, 7), bytes(1, 9), Buffer.alloc(0), bytes(40, 3)];
const WIRE = Buffer.concat(MESSAGES.map((m) => envelope(m)));

type Outcome = { messages: string[]; end: boolean; error?: ConnectError };

/** Feeds `chunks` to a FramedInput and collects what its sink got (hex of each message). */
async function read(chunks: Buffer[], maxBytes = 1024, pauseEvery = 0): Promise<Outcome> {
  const stream = new ChunkStream();
  // The decoder copies, so a message decoded in place from a chunk still reads right later.
  const decode = (buf: Buffer, start: number, end: number) => Buffer.from(buf.subarray(start, end)) as unknown as Message;
  const input = new FramedInput(stream as unknown as http2.ServerHttp2Stream, decode, maxBytes);
  const out: Outcome = { messages: [], end: false };
  const done = new Promise<void>((resolve) => {
    input.start({
      message(m) {
        out.messages.push((m as unknown as Buffer).toString("hex"));
        // A handler that pauses and resumes later (backpressure) must not lose or reorder messages.
        if (pauseEvery > 0 && out.messages.length % pauseEvery === 0) {
          input.pause();
          setImmediate(() => input.resume());
        }
      },
      end() {
        out.end = true;
        resolve();
      },
      error(err) {
        out.error = err as ConnectError;
        resolve();
      },
    });
  });
  for (const chunk of chunks) stream.emit("data", chunk);
  stream.emit("end");
  await done;
  return out;
}

const hex = (messages: Buffer[]) => messages.map((m) => m.toString("hex"));

test("framed input - a stream split at every byte reads the same as whole", async () => {
  const whole = await read([WIRE]);
  expect(whole).toEqual({ messages: hex(MESSAGES), end: true });
  for (let at = 0; at <= WIRE.length; at++) {
    const split = await read([WIRE.subarray(0, at), WIRE.subarray(at)]);
    if (split.messages.length !== MESSAGES.length || !split.end) throw new Error(`split at byte ${at} read ${JSON.stringify(split)}`);
    expect(split).toEqual(whole);
  }
});

test("framed input - chunks of every size up to a message's, and of one byte, read the same as whole", async () => {
  for (const size of [1, 2, 3, 4, 5, 6, 7, 13, 64, 299, 300, 305, 306]) {
    const chunks: Buffer[] = [];
    for (let at = 0; at < WIRE.length; at += size) chunks.push(WIRE.subarray(at, at + size));
    const got = await read(chunks);
    expect({ size, ...got }).toEqual({ size, messages: hex(MESSAGES), end: true });
  }
});

test("framed input - a handler that pauses after each message still gets every message in order", async () => {
  const chunks: Buffer[] = [];
  for (let at = 0; at < WIRE.length; at += 7) chunks.push(WIRE.subarray(at, at + 7));
  expect(await read(chunks, 1024, 1)).toEqual({ messages: hex(MESSAGES), end: true });
});

test("framed input - a stream that ends inside a message, cut anywhere, is INVALID_ARGUMENT incomplete envelope", async () => {
  const cut = WIRE.subarray(0, WIRE.length - 1);
  for (const at of [1, 5, 9, 200, cut.length - 1]) {
    const got = await read([cut.subarray(0, at), cut.subarray(at)]);
    expect(got.end).toBe(false);
    expect(got.messages).toEqual(hex(MESSAGES.slice(0, -1)));
    expect(got.error?.code).toBe(Code.InvalidArgument);
    expect(got.error?.rawMessage).toBe("protocol error: incomplete envelope");
  }
});

test("framed input - a message over the limit is RESOURCE_EXHAUSTED from its header, even when the header is split", async () => {
  const big = envelope(bytes(2000, 5));
  for (const at of [1, 3, 4, 5]) {
    // Only the header and a few bytes arrive: the refusal must not wait for the body.
    const got = await read([big.subarray(0, at), big.subarray(at, 8)], 1024);
    expect(got.messages).toEqual([]);
    expect(got.error?.code).toBe(Code.ResourceExhausted);
    expect(got.error?.rawMessage).toBe(
      "message of 2000 bytes is over this server's limit of 1024 bytes: send smaller messages (fewer points in each)",
    );
  }
});
