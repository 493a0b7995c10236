/**
 * NATS and JetStream setup shared by the services: a connection with reconnect options that suit a
 * long-running server, and the positions stream (created, or updated to the configured limits).
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { nanos } from "@nats-io/nats-core";
import {
  jetstream,
  jetstreamManager,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type StreamConfig,
  type StreamInfo,
} from "@nats-io/jetstream";
import type { Logger } from "../log";
import { Gauge, type Registry } from "../metrics";
import { POSITIONS_STREAM, POSITIONS_SUBJECTS } from "./subjects";

export interface NatsOptions {
  /** e.g. nats://127.0.0.1:4222; several servers comma-separated. */
  url: string;
  /** Connection name the server shows in its monitoring. */
  name: string;
  log: Logger;
  /** Milliseconds to wait for the first connection. */
  connectTimeoutMs?: number;
  /** The server does not deliver this connection's own messages to its subscriptions (the tracker hands them over itself). */
  noEcho?: boolean;
}

export interface Nats {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  /** True while the client holds a connection (false while it reconnects). */
  connected(): boolean;
  /** Flushes and closes the connection. */
  close(): Promise<void>;
}

/**
 * Connects to NATS and returns JetStream handles. The client reconnects forever (a server restart
 * must not take a service down) with jittered waits; status changes are logged.
 */
export async function connectNats({ url, name, log, connectTimeoutMs = 10_000, noEcho = false }: NatsOptions): Promise<Nats> {
  const nc = await connect({
    servers: url
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean),
    name,
    noEcho,
    timeout: connectTimeoutMs,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    reconnectJitter: 100,
    pingInterval: 10_000,
    maxPingOut: 3,
    // Otherwise every request (a JetStream publish is one) builds two Errors up front, with
    // their stack traces, for a failure that almost never comes: a few percent of a busy
    // gateway's CPU, one publish per batch. Errors still say what failed, without the caller's stack.
    noAsyncTraces: true,
  });
  let up = true;
  (async () => {
    for await (const s of nc.status()) {
      if (s.type === "disconnect") {
        up = false;
        log.warn("nats disconnected", { server: s.server });
      } else if (s.type === "reconnect") {
        up = true;
        log.info("nats reconnected", { server: s.server });
      } else if (s.type === "error") {
        log.warn("nats error", { err: s.error });
      }
    }
  })().catch(() => {});
  nc.closed().then(() => {
    up = false;
  });
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  return {
    nc,
    js,
    jsm,
    connected: () => up && !nc.isClosed(),
    async close() {
      if (nc.isClosed()) return;
      await nc.drain().catch(() => nc.close());
    },
  };
}

export interface PositionsStreamConfig {
  /** Dedup window of message ids, in ms (FLEET_DUPLICATE_WINDOW). */
  duplicateWindow: number;
  /** How long positions are kept, in ms (FLEET_STREAM_MAX_AGE). */
  streamMaxAge: number;
  /** Largest size of the stream in bytes (FLEET_STREAM_MAX_BYTES); default 10 GiB. */
  streamMaxBytes?: number;
  /** Stream name; tests may use their own. Default FLEET_POSITIONS. */
  stream?: string;
  /** Subjects; default fleet.pos.> */
  subjects?: string;
}

/** FLEET_STREAM_MAX_BYTES's default, for callers that give none. */
const DEFAULT_STREAM_MAX_BYTES = 10 * 1024 ** 3;

/**
 * Creates the positions stream (file storage, limits retention) or updates an existing one to the
 * configured duplicate window and limits. Safe to call from every instance at start.
 *
 * The limits' policy: positions leave the stream by age (FLEET_STREAM_MAX_AGE, far longer than any
 * sink may lag), and size (FLEET_STREAM_MAX_BYTES) bounds the disk. A full stream refuses new
 * messages (DiscardPolicy.New: the gateway answers UNAVAILABLE and acks nothing) rather than drop
 * its oldest (DiscardPolicy.Old would silently delete acked points a lagging sink has not read).
 * `watchStreamLimits` shows how near the limits the stream is.
 */
export async function ensurePositionsStream(jsm: JetStreamManager, config: PositionsStreamConfig): Promise<StreamInfo> {
  const name = config.stream ?? POSITIONS_STREAM;
  const wanted: Partial<StreamConfig> = {
    subjects: [config.subjects ?? POSITIONS_SUBJECTS],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.New,
    duplicate_window: nanos(config.duplicateWindow),
    max_age: nanos(config.streamMaxAge),
    max_bytes: config.streamMaxBytes ?? DEFAULT_STREAM_MAX_BYTES,
    num_replicas: 1,
  };
  try {
    const info = await jsm.streams.info(name);
    const c = info.config;
    if (
      c.duplicate_window === wanted.duplicate_window &&
      c.max_age === wanted.max_age &&
      c.max_bytes === wanted.max_bytes &&
      c.discard === wanted.discard &&
      c.subjects?.[0] === wanted.subjects![0]
    ) {
      return info;
    }
    // Storage and replicas cannot change on a live stream; only the limits are updated.
    return await jsm.streams.update(name, {
      subjects: wanted.subjects,
      duplicate_window: wanted.duplicate_window,
      max_age: wanted.max_age,
      max_bytes: wanted.max_bytes,
      discard: wanted.discard,
    });
  } catch (err) {
    if (!isStreamNotFound(err)) throw err;
    try {
      return await jsm.streams.add({ name, ...wanted });
    } catch (addErr) {
      // Another instance created it between our info and add.
      if (/already in use|exists/i.test(String((addErr as Error)?.message))) return jsm.streams.info(name);
      if (/insufficient storage/i.test(String((addErr as Error)?.message))) {
        throw new Error(
          `JetStream cannot reserve FLEET_STREAM_MAX_BYTES (${wanted.max_bytes} bytes) for stream ${name}: lower it, or raise the server's jetstream max_file_store`,
          { cause: addErr },
        );
      }
      throw addErr;
    }
  }
}

function isStreamNotFound(err: unknown): boolean {
  const e = err as { name?: string; message?: string; code?: number; api_error?: { err_code?: number } };
  return e?.name === "StreamNotFoundError" || e?.api_error?.err_code === 10059 || /stream not found/i.test(e?.message ?? "");
}

/** Share of a limit past which `watchStreamLimits` warns in the log. */
const NEAR_LIMIT = 0.8;

/**
 * Gauges of how full the positions stream is, read from JetStream at each scrape:
 * `fleet_stream_bytes` and `fleet_stream_max_bytes`, `fleet_stream_oldest_age_seconds` and
 * `fleet_stream_max_age_seconds`, and `fleet_stream_limit_ratio` (the nearer of the two, 0–1; at
 * 1 for bytes new points are refused). It also checks every `intervalMs` and logs a warning while
 * the stream is past 80% of its size limit. Returns that timer (clearInterval stops it).
 */
export function watchStreamLimits(
  jsm: JetStreamManager,
  {
    stream = POSITIONS_STREAM,
    registry,
    log,
    intervalMs = 60_000,
  }: { stream?: string; registry: Registry; log: Logger; intervalMs?: number },
): ReturnType<typeof setInterval> {
  const read = async () => {
    const info = await jsm.streams.info(stream);
    const maxBytes = Math.max(info.config.max_bytes, 0);
    const maxAgeS = info.config.max_age > 0 ? info.config.max_age / 1e9 : 0;
    const first = info.state.messages > 0 && info.state.first_ts ? Date.parse(info.state.first_ts) : NaN;
    const ageS = Number.isFinite(first) ? Math.max(0, (Date.now() - first) / 1000) : 0;
    const ratio = Math.max(maxBytes ? info.state.bytes / maxBytes : 0, maxAgeS ? ageS / maxAgeS : 0);
    return { bytes: info.state.bytes, maxBytes, ageS, maxAgeS, ratio };
  };
  const gauge = (name: string, help: string, pick: (r: Awaited<ReturnType<typeof read>>) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        try {
          this.set(pick(await read()));
        } catch {
          // JetStream unreachable: the scrape keeps the last value; the connection metrics say why.
        }
      },
    });
  gauge("fleet_stream_bytes", "bytes held by the positions stream", (r) => r.bytes);
  gauge("fleet_stream_max_bytes", "FLEET_STREAM_MAX_BYTES as the stream has it (0: none)", (r) => r.maxBytes);
  gauge("fleet_stream_oldest_age_seconds", "age of the oldest message in the positions stream", (r) => r.ageS);
  gauge("fleet_stream_max_age_seconds", "FLEET_STREAM_MAX_AGE as the stream has it (0: none)", (r) => r.maxAgeS);
  gauge(
    "fleet_stream_limit_ratio",
    "how near the positions stream is to its nearer limit, 0-1 (bytes at 1: new points refused)",
    (r) => r.ratio,
  );
  const timer = setInterval(() => {
    read().then(
      (r) => {
        if (r.maxBytes && r.bytes / r.maxBytes >= NEAR_LIMIT) {
          log.warn(
            "positions stream nearly full: new points are refused once it is; raise FLEET_STREAM_MAX_BYTES or find the lagging sink",
            {
              stream,
              bytes: r.bytes,
              maxBytes: r.maxBytes,
            },
          );
        }
      },
      () => {},
    );
  }, intervalMs);
  timer.unref?.();
  return timer;
}
