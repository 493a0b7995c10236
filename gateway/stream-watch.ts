/**
 * Keeps the request streams being read and stops them from outside, in the two ways a stream
 * itself cannot: the idle timeout (a stream that sends nothing for `idleTimeoutMs` is stopped with
 * IdleTimeoutError) and drain (every stream is stopped without error, so its handler acks what it
 * has and ends).
 *
 * One sweeper timer serves every open stream; per message a stream only stores a timestamp.
 */
import { IdleTimeoutError } from "../lib/grpc";

/** One watched stream. */
export interface WatchedStream {
  /** A message arrived at `now` (ms). */
  touch(now: number): void;
  /** While held (the gateway itself stopped reading, e.g. no room in flight), the stream is not idle. */
  hold(held: boolean): void;
  /** Stops watching (the stream ended). */
  close(): void;
}

/** What a watched stream's reader does when the watch stops it. */
export interface Stoppable {
  /** Called at most once, with IdleTimeoutError or (drain) undefined. */
  stop(err: Error | undefined): void;
}

export interface StreamWatch {
  /** Watches a stream; its reader's `stop` is called at most once, with IdleTimeoutError or (drain) undefined. */
  watch(reader: Stoppable): WatchedStream;
  /** Stops every watched stream; streams watched later are stopped at once. */
  drain(): void;
  readonly size: number;
  /** Stops the sweeper. */
  close(): void;
}

class Entry implements WatchedStream {
  last = Date.now();
  held = false;

  constructor(
    readonly reader: Stoppable,
    private readonly entries: Set<Entry>,
  ) {}

  touch(now: number): void {
    this.last = now;
  }

  hold(held: boolean): void {
    this.held = held;
    if (!held) this.last = Date.now();
  }

  close(): void {
    this.entries.delete(this);
  }
}

/** Creates the registry of open request streams. */
export function createStreamWatch({ idleTimeoutMs }: { idleTimeoutMs: number }): StreamWatch {
  const entries = new Set<Entry>();
  let draining = false;
  const sweep = setInterval(
    () => {
      const now = Date.now();
      for (const e of entries) {
        if (!e.held && now - e.last >= idleTimeoutMs) {
          entries.delete(e);
          e.reader.stop(new IdleTimeoutError(`stream sent nothing for ${idleTimeoutMs / 1000} s: closed, reconnect when there is data`));
        }
      }
    },
    Math.max(50, Math.min(1000, idleTimeoutMs / 4)),
  );
  sweep.unref?.();

  return {
    watch(reader) {
      const entry = new Entry(reader, entries);
      // Asynchronously, so that the caller holds the entry before it is stopped.
      if (draining) queueMicrotask(() => reader.stop(undefined));
      else entries.add(entry);
      return entry;
    },
    drain() {
      draining = true;
      const all = [...entries];
      entries.clear();
      for (const e of all) e.reader.stop(undefined);
    },
    get size() {
      return entries.size;
    },
    close() {
      clearInterval(sweep);
    },
  };
}
