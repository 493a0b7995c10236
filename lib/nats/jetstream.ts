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
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type StreamConfig,
  type StreamInfo,
} from "@nats-io/jetstream";
import type { Logger } from "../log";
import { Counter, Gauge, type Registry } from "../metrics";
import { POSITIONS_STREAM, POSITIONS_SUBJECTS } from "./subjects";

export interface NatsOptions {
  /** e.g. nats://127.0.0.1:4222; several servers comma-separated. */
  url: string;
  /** Connection name the server shows in its monitoring. */
  name: string;
  log: Logger;
  /**
   * Milliseconds each connection attempt may take, the first and every reconnect (default: twice
   * the ping interval, at least 2 s). nats.js tries the server it lost first: a stopped node
   * accepts the TCP connection and never answers, so this is what a reconnect waits before it
   * tries another member (it was 10 s: a paused node held its clients for ~11 s after they saw it
   * stale; measured with a SIGSTOPped member of the stack's 3-node cluster).
   */
  connectTimeoutMs?: number;
  /**
   * How long the first connection may take in all (default 10 s), its JetStream answering
   * included: attempts that time out, and a JetStream still electing its leader, are tried again
   * until then. A busy server (an election after a node died, a loaded machine) can take
   * longer than one short attempt to answer a new client, and a service starting then must not fail.
   */
  firstConnectTimeoutMs?: number;
  /** The server does not deliver this connection's own messages to its subscriptions (the tracker hands them over itself). */
  noEcho?: boolean;
  /**
   * How often to ping the server (ms); two pings unanswered and the client drops the connection
   * and reconnects, to another member when there are several. The library's default (2 minutes,
   * 2 out) kept a service on a SIGSTOPped node for minutes; the cost is one small PING/PONG per
   * connection per interval.
   */
  pingIntervalMs?: number;
  /** Where `nats_connected` and `nats_reconnects_total` go (the service's registry); none: not counted. */
  registry?: Registry;
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

/** The servers of a NATS_URL: one URL, or several comma-separated (members of one cluster). */
export function natsServers(url: string): string[] {
  return url
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

/**
 * Connects to NATS and returns JetStream handles. The client reconnects forever (a server restart
 * must not take a service down) with jittered waits, to any server of NATS_URL or any member the
 * cluster announced since (nats.js follows the servers' INFO updates unless `ignoreClusterUpdates`,
 * which we leave off). Every status change is logged; `nats_connected` and `nats_reconnects_total`
 * count them when a registry is given.
 */
export async function connectNats({
  url,
  name,
  log,
  noEcho = false,
  pingIntervalMs = 2_000,
  connectTimeoutMs = Math.max(2_000, 2 * pingIntervalMs),
  firstConnectTimeoutMs = 10_000,
  registry,
}: NatsOptions): Promise<Nats> {
  const firstDeadline = Date.now() + firstConnectTimeoutMs;
  let nc: NatsConnection;
  for (;;) {
    try {
      nc = await connectOnce();
      break;
    } catch (err) {
      // Only a server that did not answer in time is tried again; a refused connection or bad
      // credentials fail at once, as they always did.
      if (!(err instanceof Error && err.name === "TimeoutError") || Date.now() + connectTimeoutMs > firstDeadline) throw err;
      log.warn("nats did not answer in time: connecting again", { servers: url, timeoutMs: connectTimeoutMs });
    }
  }
  return setUp(nc);

  function connectOnce(): Promise<NatsConnection> {
    return connect({
      servers: natsServers(url),
      name,
      noEcho,
      timeout: connectTimeoutMs,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      reconnectJitter: 100,
      pingInterval: pingIntervalMs,
      maxPingOut: 2,
      // Otherwise every request (a JetStream publish is one) builds two Errors up front, with
      // their stack traces, for a failure that almost never comes: a few percent of a busy
      // gateway's CPU, one publish per batch. Errors still say what failed, without the caller's stack.
      noAsyncTraces: true,
    });
  }

  /**
   * The JetStream manager, asking again while the server's JetStream cannot answer, within the first
   * connection's budget: a cluster electing its meta leader answers "temporarily unavailable"
   * (10008) for seconds (measured: ~4 s after two of the stack's three nodes come back from a
   * SIGSTOP; also seen right after one paused member resumed), and one without quorum does not
   * answer at all. A service starting then must not fail. Any other error (JetStream not enabled,
   * …) fails at once.
   */
  async function managerWhenReady(nc: NatsConnection): Promise<JetStreamManager> {
    try {
      return await whileJetStreamElects(
        () => jetstreamManager(nc, { timeout: Math.max(500, Math.min(5_000, firstDeadline - Date.now())) }),
        firstDeadline,
        (err) => log.warn(NOT_READY, { server: nc.getServer(), err: String(err) }),
      );
    } catch (err) {
      await nc.close().catch(() => {});
      throw err;
    }
  }

  async function setUp(nc: NatsConnection): Promise<Nats> {
    let up = true;
    const connectedGauge = registry
      ? new Gauge({
          name: "nats_connected",
          help: "1 while the NATS connection is up, 0 while it reconnects or is closed",
          registers: [registry],
        })
      : undefined;
    const reconnects = registry
      ? new Counter({
          name: "nats_reconnects_total",
          help: "times the NATS connection was re-established after a loss",
          registers: [registry],
        })
      : undefined;
    connectedGauge?.set(1);
    // Attempts while the cluster is away come every reconnectTimeWait: the first of each outage is a
    // warning, the rest are debug lines, so that a long outage does not flood the log.
    let attempts = 0;
    (async () => {
      for await (const s of nc.status()) {
        switch (s.type) {
          case "disconnect":
            up = false;
            attempts = 0;
            connectedGauge?.set(0);
            log.warn("nats disconnected", { server: s.server });
            break;
          case "reconnecting":
            attempts++;
            if (attempts === 1) log.warn("nats reconnecting", { servers: url });
            else log.debug("nats reconnecting", { attempt: attempts });
            break;
          case "reconnect":
            up = true;
            connectedGauge?.set(1);
            reconnects?.inc();
            log.info("nats reconnected", { server: s.server, attempts });
            break;
          case "update":
            log.info("nats cluster changed", { added: s.added, deleted: s.deleted });
            break;
          case "ldm":
            // The server is going away (lame duck): the client moves to another before it does.
            log.warn("nats server entering lame duck mode", { server: s.server });
            break;
          case "error":
            log.warn("nats error", { err: s.error });
            break;
          case "staleConnection":
            log.warn("nats connection stale (pings unanswered): reconnecting");
            break;
          case "slowConsumer":
            log.warn("nats slow consumer", { subject: s.sub.getSubject(), pending: s.pending });
            break;
          case "close":
            log.info("nats connection closed");
            break;
          default:
            log.debug("nats status", { type: s.type });
        }
      }
    })().catch(() => {});
    nc.closed().then(() => {
      up = false;
      connectedGauge?.set(0);
    });
    const js = jetstream(nc);
    const jsm = await managerWhenReady(nc);
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
}

/** The server's JetStream cannot answer yet (err_code 10008, "JetStream system temporarily unavailable"). */
export function isJetStreamUnavailable(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === 10008;
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
  /** Copies of the stream on a cluster (FLEET_STREAM_REPLICAS). None: 1 for a new stream, an existing one's left as it is. */
  replicas?: number;
  /** Where a change of the live stream (its replicas) is said. */
  log?: Logger;
}

/**
 * The positions stream's settings from the configuration: every service passes the same ones, or
 * each start would set the stream to its own (limits, replicas) and the next undo it.
 */
export function positionsStreamSettings(config: {
  duplicateWindow: number;
  streamMaxAge: number;
  streamMaxBytes: number;
  streamReplicas: number;
}): Pick<PositionsStreamConfig, "duplicateWindow" | "streamMaxAge" | "streamMaxBytes" | "replicas"> {
  return {
    duplicateWindow: config.duplicateWindow,
    streamMaxAge: config.streamMaxAge,
    streamMaxBytes: config.streamMaxBytes,
    replicas: config.streamReplicas,
  };
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
 *
 * Replicas: an existing stream with other `num_replicas` is scaled in place (JetStream copies it
 * to the new peers, or drops the extra ones) and the log says "positions stream replicas 1 -> 3".
 * The durable consumers are created without replicas of their own, so the server scales them with
 * the stream.
 */
export async function ensurePositionsStream(jsm: JetStreamManager, config: PositionsStreamConfig): Promise<StreamInfo> {
  // A service's start: a cluster electing its meta leader right after the connection was made
  // (connectNats waits for a first answer, not for every later one) answers 10008 or not at all
  // for seconds; asked again rather than failing the start.
  return whileJetStreamElects(
    () => ensurePositionsStreamOnce(jsm, config),
    Date.now() + ELECTION_BUDGET_MS,
    (err) => config.log?.warn(NOT_READY, { stream: config.stream ?? POSITIONS_STREAM, err: String(err) }),
  );
}

/** How long a service's start asks again while JetStream elects (ensurePositionsStream). */
const ELECTION_BUDGET_MS = 20_000;

const NOT_READY = "jetstream is not ready on this server yet: asking again";

/**
 * Runs `op`, again every 250 ms while JetStream answers "temporarily unavailable" (10008) or does
 * not answer (a cluster electing its meta leader, or without quorum), until `deadline`; `warn` is
 * called once, at the first such answer. Any other error fails at once.
 */
async function whileJetStreamElects<T>(op: () => Promise<T>, deadline: number, warn: (err: unknown) => void): Promise<T> {
  for (let warned = false; ; ) {
    try {
      return await op();
    } catch (err) {
      const notYet = isJetStreamUnavailable(err) || (err instanceof Error && err.name === "TimeoutError");
      if (!notYet || Date.now() + 250 > deadline) throw err;
      if (!warned) warn(err);
      warned = true;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

async function ensurePositionsStreamOnce(jsm: JetStreamManager, config: PositionsStreamConfig): Promise<StreamInfo> {
  const name = config.stream ?? POSITIONS_STREAM;
  const wanted: Partial<StreamConfig> = {
    subjects: [config.subjects ?? POSITIONS_SUBJECTS],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.New,
    duplicate_window: nanos(config.duplicateWindow),
    max_age: nanos(config.streamMaxAge),
    max_bytes: config.streamMaxBytes ?? DEFAULT_STREAM_MAX_BYTES,
    num_replicas: config.replicas ?? 1,
  };
  try {
    const info = await jsm.streams.info(name);
    const c = info.config;
    if (
      c.duplicate_window === wanted.duplicate_window &&
      c.max_age === wanted.max_age &&
      c.max_bytes === wanted.max_bytes &&
      c.discard === wanted.discard &&
      c.subjects?.[0] === wanted.subjects![0] &&
      (config.replicas === undefined || c.num_replicas === wanted.num_replicas)
    ) {
      return info;
    }
    // Storage cannot change on a live stream; the limits and the replicas can.
    const updated = await jsm.streams
      .update(name, {
        subjects: wanted.subjects,
        duplicate_window: wanted.duplicate_window,
        max_age: wanted.max_age,
        max_bytes: wanted.max_bytes,
        discard: wanted.discard,
        num_replicas: config.replicas === undefined ? c.num_replicas : wanted.num_replicas,
      })
      .catch((updateErr) => {
        throw replicasError(updateErr, name, wanted.num_replicas!);
      });
    if (config.replicas !== undefined && c.num_replicas !== wanted.num_replicas) {
      config.log?.info(`positions stream replicas ${c.num_replicas} -> ${wanted.num_replicas}`, {
        stream: name,
        from: c.num_replicas,
        to: wanted.num_replicas,
      });
    }
    return updated;
  } catch (err) {
    if (!isStreamNotFound(err)) throw err;
    try {
      return await jsm.streams.add({ name, ...wanted });
    } catch (addErr) {
      // Another instance created it between our info and add.
      if (/already in use|exists/i.test(String((addErr as Error)?.message))) return jsm.streams.info(name);
      if (/insufficient resources|no suitable peers|replicas > 1 not supported/i.test(String((addErr as Error)?.message))) {
        throw replicasError(addErr, name, wanted.num_replicas!);
      }
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

/** A stream the cluster cannot hold with that many replicas: say which variable to change. */
function replicasError(err: unknown, stream: string, replicas: number): Error {
  const message = String((err as Error)?.message);
  if (replicas > 1 && /insufficient resources|no suitable peers|replicas > 1 not supported|not enough peers/i.test(message)) {
    return new Error(
      `JetStream cannot place ${replicas} replicas of stream ${stream} (${message}): FLEET_STREAM_REPLICAS must not exceed the cluster's nats-servers with JetStream (1 on a single server)`,
      { cause: err },
    );
  }
  return err instanceof Error ? err : new Error(message);
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
  // The five gauges of one scrape share one stream-info request (each gauge collects on its own).
  let scraped: { at: number; reading: ReturnType<typeof read> } | undefined;
  const readForScrape = () => {
    if (!scraped || Date.now() - scraped.at > 1000) scraped = { at: Date.now(), reading: read() };
    return scraped.reading;
  };
  const gauge = (name: string, help: string, pick: (r: Awaited<ReturnType<typeof read>>) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        try {
          this.set(pick(await readForScrape()));
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
