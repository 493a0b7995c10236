/**
 * Reads a request stream one message at a time, with two ways to stop it from outside that a plain
 * `for await` lacks: the idle timeout (a stream that sends nothing for `idleTimeoutMs` fails with
 * IdleTimeoutError) and drain (the reader reports "done" so the handler acks what it has and ends).
 *
 * One sweeper timer serves every open stream; per message the reader only stores a timestamp.
 */
import { IdleTimeoutError } from "../lib/rpc";

export interface StreamReader<T> {
  /** The next message, or undefined when the stream ended or the gateway drains. */
  next(): Promise<T | undefined>;
  /** Stops watching this stream (call in `finally`). */
  close(): void;
}

export interface StreamReaders {
  open<T>(messages: AsyncIterable<T>): StreamReader<T>;
  /** Every open reader reports the end of its stream; new readers end at once. */
  drain(): void;
  readonly size: number;
  /** Stops the sweeper. */
  close(): void;
}

interface Entry {
  last: number;
  interrupt: ((err: Error | undefined) => void) | undefined;
  stopped: Error | null | undefined;
}

/** Creates the registry of open request streams. */
export function createStreamReaders({ idleTimeoutMs }: { idleTimeoutMs: number }): StreamReaders {
  const entries = new Set<Entry>();
  let draining = false;
  const sweep = setInterval(
    () => {
      const now = Date.now();
      for (const e of entries) {
        if (e.interrupt && now - e.last >= idleTimeoutMs) {
          e.stopped = new IdleTimeoutError(`stream sent nothing for ${idleTimeoutMs / 1000} s: closed, reconnect when there is data`);
          e.interrupt(e.stopped);
        }
      }
    },
    Math.max(50, Math.min(1000, idleTimeoutMs / 4)),
  );
  sweep.unref?.();

  return {
    open<T>(messages: AsyncIterable<T>): StreamReader<T> {
      const it = messages[Symbol.asyncIterator]();
      const entry: Entry = { last: Date.now(), interrupt: undefined, stopped: draining ? null : undefined };
      entries.add(entry);
      return {
        next() {
          if (entry.stopped !== undefined) {
            return entry.stopped === null ? Promise.resolve(undefined) : Promise.reject(entry.stopped);
          }
          return new Promise<T | undefined>((resolve, reject) => {
            entry.interrupt = (err) => {
              entry.interrupt = undefined;
              if (err) reject(err);
              else resolve(undefined);
            };
            it.next().then(
              (r) => {
                if (!entry.interrupt) return;
                entry.interrupt = undefined;
                entry.last = Date.now();
                resolve(r.done ? undefined : r.value);
              },
              (err: unknown) => {
                if (!entry.interrupt) return;
                entry.interrupt = undefined;
                reject(err);
              },
            );
          });
        },
        close() {
          entries.delete(entry);
        },
      };
    },
    drain() {
      draining = true;
      for (const e of entries) {
        if (e.stopped === undefined) e.stopped = null;
        e.interrupt?.(undefined);
      }
    },
    get size() {
      return entries.size;
    },
    close() {
      clearInterval(sweep);
    },
  };
}
