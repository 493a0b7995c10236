/**
 * One runner for the jobs that must run once however many processes run a service (history's track
 * packer and partitions ahead, the archiver's timed runs, the tracker's staleness sweep). Every
 * process runs a leader: every `intervalMs` the holder checks that its hold is still its own, the
 * others try to take it. A job's timer runs only where `isLeader()` is true.
 *
 * Two holds, each tied to the server the job works on, so that electing adds no failure mode:
 * - `postgresLock`: a session-level advisory lock on a connection of its own. It dies with the
 *   connection: a killed leader's lock is free at once, and the next try of another process (within
 *   the interval) takes it.
 * - `redisLease`: a key with a TTL (SET NX PX), renewed by its holder, deleted only by its holder
 *   (compare-and-delete). A killed leader's lease expires after its TTL (three intervals), then
 *   another takes it. Chosen over a NATS KV lease for the tracker's sweep because the sweep works
 *   on Redis: when Redis is away there is nothing to sweep anyway, and a Redis key needs no bucket
 *   with per-message TTLs (nats-server 2.11's allow_msg_ttl) to be created and replicated.
 *
 * Neither is a fence: a leader stalled past its hold (a long pause) may run once more beside the
 * new one. Each job is safe run twice (the packer and the archive take a lock of their own per
 * run, partitions are created under a transaction lock, sweep.lua takes each vehicle offline once);
 * the election only keeps the others from doing the work again and again.
 */
import { randomBytes } from "node:crypto";
import type Redis from "ioredis";
import postgres from "postgres";
import type { Logger } from "./log";
import { Gauge, type Registry } from "./metrics";

/** How one kind of hold is taken, kept and given up. */
export interface Hold {
  /** Tries to take the hold; true when this process holds it now. */
  acquire(): Promise<boolean>;
  /** True while the hold is still this process's (extending it where it expires). */
  renew(): Promise<boolean>;
  /** Gives the hold up if it is still this process's, and leaves the hold ready to acquire again. */
  release(): Promise<void>;
}

export interface LeaderOptions extends Hold {
  /** The job, as logged and as the `job` label of fleet_leader. */
  name: string;
  /** How often the holder renews and the others try (a try or renewal that takes longer fails). */
  intervalMs: number;
  log: Logger;
  registry?: Registry;
  /** Called each time this process becomes leader (run the job's first round now, say). */
  onLeader?: () => void;
}

export interface Leader {
  isLeader(): boolean;
  /** Stops trying and gives the hold up, so that another process takes over at its next try. */
  close(): Promise<void>;
}

const withTimeout = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
    p.then(
      (v) => (clearTimeout(t), resolve(v)),
      (e) => (clearTimeout(t), reject(e)),
    );
  });

/** Starts electing: the first try is now. */
export function createLeader({ name, acquire, renew, release, intervalMs, log, registry, onLeader }: LeaderOptions): Leader {
  const gauge = registry
    ? ((registry.getSingleMetric("fleet_leader") as Gauge | undefined) ??
      new Gauge({
        name: "fleet_leader",
        help: "1 while this process runs the job that must run once (its leader), else 0",
        labelNames: ["job"],
        registers: [registry],
      }))
    : undefined;
  gauge?.set({ job: name }, 0);
  let leader = false;
  let closed = false;
  let failing = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const set = (v: boolean) => {
    leader = v;
    gauge?.set({ job: name }, v ? 1 : 0);
  };

  const tick = async () => {
    if (leader) {
      let still = false;
      try {
        still = await withTimeout(renew(), intervalMs, "renewing the hold");
      } catch (err) {
        log.warn("could not renew leadership", { job: name, err });
      }
      if (!still) {
        set(false);
        log.warn("lost leadership", { job: name });
        // Whatever is left of the hold (a connection that may still hold the lock) goes, so that the next try starts clean.
        await withTimeout(release(), intervalMs, "releasing").catch(() => {});
      }
      return;
    }
    try {
      if (await withTimeout(acquire(), intervalMs, "taking the hold")) {
        set(true);
        log.info("became leader", { job: name });
        try {
          onLeader?.();
        } catch (err) {
          log.warn("the leader's first round failed: its timer retries", { job: name, err });
        }
      }
      failing = false;
    } catch (err) {
      if (!failing) log.warn("could not try for leadership: retrying", { job: name, err });
      failing = true;
      await withTimeout(release(), intervalMs, "releasing").catch(() => {});
    }
  };
  let running: Promise<void> = Promise.resolve();
  const loop = () => {
    running = tick().finally(() => {
      if (!closed) timer = setTimeout(loop, intervalMs);
    });
  };
  loop();

  return {
    isLeader: () => leader,
    async close() {
      closed = true;
      clearTimeout(timer);
      await running;
      const was = leader;
      set(false);
      await withTimeout(release(), Math.max(intervalMs, 2000), "releasing").catch((err) =>
        log.warn("could not give leadership up: it ends with the connection or lease", { job: name, err }),
      );
      if (was) log.info("gave leadership up", { job: name });
    },
  };
}

export interface PostgresLockOptions {
  /** postgres:// URL; the lock has a connection of its own, outside every pool. */
  url: string;
  /** The advisory lock's key (lockKey of the job and schema). */
  key: bigint;
  /** Shown in pg_stat_activity. */
  applicationName?: string;
}

/**
 * A session-level advisory lock on a dedicated connection. The hold is the connection: renewing
 * checks that the backend is still the one that took the lock (postgres.js reconnects silently, and a
 * new backend holds nothing); releasing closes the connection, which frees the lock in the server.
 */
export function postgresLock({ url, key, applicationName = "fleet leader" }: PostgresLockOptions): Hold {
  let sql: postgres.Sql | undefined;
  let pid: number | undefined;
  const k = key.toString();
  const open = () =>
    (sql ??= postgres(url, {
      max: 1,
      // The connection must live as long as the lock: no idle or lifetime limit; keepalive finds a dead peer.
      idle_timeout: 0,
      max_lifetime: 0,
      keep_alive: 5,
      connect_timeout: 5,
      onnotice: () => {},
      connection: { application_name: applicationName },
    }));
  return {
    async acquire() {
      const [r] = await open()`SELECT pg_try_advisory_lock(${k}::bigint) AS ok, pg_backend_pid() AS pid`;
      if (r?.ok) pid = r.pid as number;
      return Boolean(r?.ok);
    },
    async renew() {
      if (!sql || pid === undefined) return false;
      const [r] = await sql`SELECT pg_backend_pid() AS pid`;
      return r?.pid === pid;
    },
    async release() {
      const s = sql;
      sql = undefined;
      pid = undefined;
      await s?.end({ timeout: 1 });
    },
  };
}

export interface RedisLeaseOptions {
  redis: Redis;
  key: string;
  /** How long a lease lasts unrenewed (three renewal intervals, say). */
  ttlMs: number;
  /** This holder's token (default: random). */
  owner?: string;
}

// Taking it again when it is already ours (a renewal that timed out but had landed) extends it.
const ACQUIRE = `if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0`;
const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0`;
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/** A lease in Redis: SET key owner NX PX ttl, renewed and deleted only by its owner (Lua compare-and-set). */
export function redisLease({ redis, key, ttlMs, owner = randomBytes(8).toString("hex") }: RedisLeaseOptions): Hold {
  return {
    acquire: async () => (await redis.eval(ACQUIRE, 1, key, owner, ttlMs)) === 1,
    renew: async () => (await redis.eval(RENEW, 1, key, owner, ttlMs)) === 1,
    async release() {
      await redis.eval(RELEASE, 1, key, owner);
    },
  };
}
