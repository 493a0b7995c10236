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
import type { Logger } from "./log";
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
    servers: url.split(",").map((s) => s.trim()).filter(Boolean),
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
  /** Stream name; tests may use their own. Default FLEET_POSITIONS. */
  stream?: string;
  /** Subjects; default fleet.pos.> */
  subjects?: string;
}

/**
 * Creates the positions stream (file storage, limits retention) or updates an existing one to the
 * configured duplicate window and max age. Safe to call from every instance at start.
 */
export async function ensurePositionsStream(jsm: JetStreamManager, config: PositionsStreamConfig): Promise<StreamInfo> {
  const name = config.stream ?? POSITIONS_STREAM;
  const wanted: Partial<StreamConfig> = {
    subjects: [config.subjects ?? POSITIONS_SUBJECTS],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    duplicate_window: nanos(config.duplicateWindow),
    max_age: nanos(config.streamMaxAge),
    num_replicas: 1,
  };
  try {
    const info = await jsm.streams.info(name);
    const c = info.config;
    if (c.duplicate_window === wanted.duplicate_window && c.max_age === wanted.max_age && c.subjects?.[0] === wanted.subjects![0]) {
      return info;
    }
    // Storage and replicas cannot change on a live stream; only the limits are updated.
    return await jsm.streams.update(name, {
      subjects: wanted.subjects,
      duplicate_window: wanted.duplicate_window,
      max_age: wanted.max_age,
    });
  } catch (err) {
    if (!isStreamNotFound(err)) throw err;
    try {
      return await jsm.streams.add({ name, ...wanted });
    } catch (addErr) {
      // Another instance created it between our info and add.
      if (/already in use|exists/i.test(String((addErr as Error)?.message))) return jsm.streams.info(name);
      throw addErr;
    }
  }
}

function isStreamNotFound(err: unknown): boolean {
  const e = err as { name?: string; message?: string; code?: number; api_error?: { err_code?: number } };
  return e?.name === "StreamNotFoundError" || e?.api_error?.err_code === 10059 || /stream not found/i.test(e?.message ?? "");
}
