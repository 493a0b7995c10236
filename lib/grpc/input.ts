/**
 * What a native handler reads and how messages cross the wire: a `MessageInput` pushes request
 * messages (with pause/resume, so that HTTP/2 flow control holds a fast sender back), and
 * `iterableInput()` adapts connect's AsyncIterable to it, so one handler serves both paths.
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** Receives the messages of a request stream, in order; then exactly one of `end` or `error`. */
export interface MessageSink<T> {
  message(message: T): void;
  /** The client half-closed after its last message. */
  end(): void;
  /** The stream failed: malformed or oversized message, reset by the client, deadline passed. */
  error(err: unknown): void;
}

/**
 * A request stream that pushes its messages to the handler. While paused, nothing is read, so
 * the client's HTTP/2 flow-control window fills and its writes stop completing.
 */
export interface MessageInput<T> {
  /** Starts delivery (once). */
  start(sink: MessageSink<T>): void;
  /** No more messages until `resume()`. May be called before `start`. */
  pause(): void;
  resume(): void;
  /** The handler is done reading (drain, idle, fatal message): nothing more is delivered. */
  stop(): void;
}

/** A MessageInput over an AsyncIterable: what connect hands a streaming handler. */
export function iterableInput<T>(messages: AsyncIterable<T>): MessageInput<T> {
  let paused = false;
  let stopped = false;
  let wake: (() => void) | undefined;
  const wakeUp = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  return {
    start(sink) {
      const it = messages[Symbol.asyncIterator]();
      (async () => {
        for (;;) {
          while (paused && !stopped) await new Promise<void>((resolve) => (wake = resolve));
          if (stopped) return;
          const r = await it.next();
          if (stopped) return;
          if (r.done) return sink.end();
          sink.message(r.value);
        }
      })().catch((err: unknown) => {
        if (!stopped) sink.error(err);
      });
    },
    pause() {
      paused = true;
    },
    resume() {
      paused = false;
      wakeUp();
    },
    stop() {
      stopped = true;
      wakeUp();
    },
  };
}

/**
 * Decodes the message at `buf[start, end)`. Offsets, not a view: making a view of a fresh Buffer
 * (`subarray`, or `.buffer` which materializes its ArrayBuffer) costs more than decoding a point.
 */
export type MessageDecoder<T> = (buf: Buffer, start: number, end: number) => T;

/**
 * Encodes a response message the handler yielded. The bytes are copied into their frame at once,
 * so an encoder may return a view of a buffer it reuses.
 */
export type MessageEncoder<T> = (message: T) => Uint8Array;
/** Reads the one request message of a server-streaming call. */
export function single<T>(input: MessageInput<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    let got: T | undefined;
    let count = 0;
    input.start({
      message(m) {
        got = m;
        count++;
      },
      end() {
        if (count === 1) resolve(got!);
        else reject(new ConnectError(`protocol error: expected one request message, got ${count}`, Code.InvalidArgument));
      },
      error: reject,
    });
  });
}
