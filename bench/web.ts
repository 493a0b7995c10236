/**
 * `bun run bench web`: the operator dashboard in headless Chromium (software WebGL: SwiftShader)
 * with `--vehicles` vehicles in view while a real tracker streams `--rate` updates/s to it.
 *
 * 1. nats-server and redis-server (stack helper), one tracker process.
 * 2. The vehicles are published straight into the positions stream (PositionBatch messages of up
 *    to 1,000 points, as the gateway writes them) and the tracker drains them into Redis.
 * 3. The dashboard (cli/web.ts's bundle) opens on their box and takes the 100,000-vehicle snapshot.
 * 4. The feed: every 50 ms the next slice of vehicles moves a little (rate/20 points), again
 *    straight into the stream: the tracker consumes them and fans them out to the page's WatchArea.
 * 5. After a 3 s warm-up, `--seconds` measured: the page's main-thread busy share (CDP Performance
 *    metrics: TaskDuration over wall time), frames drawn per second (deck's after-render count),
 *    input delay (a mouse move every 100 ms through CDP; the page's handler takes
 *    performance.now() - event.timeStamp), JS heap, the updates/s the page counted.
 *
 * Prints progress and a table; the LAST line is one JSON object (WebFigures).
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { PositionBatchSchema, PositionSchema, VehicleStatus, type Position } from "../gen/fleet/v1/position_pb";
import { mintWatchToken } from "../lib/auth";
import { loadConfig } from "../lib/config";
import { ensurePositionsStream, partitionOf, positionsSubject } from "../lib/nats";
import { startServiceProcess, startStack } from "../dev";
import type { Page } from "playwright-core";
import { launchBrowser, openPage } from "../dev/browser";
import { buildWebApp, pageUrl, startWebApp } from "../cli/web";
import { fetchMetrics } from "./prom-histogram";
import { createHistogram } from "./histogram";
import { summarizeProfile } from "./profile-summary";
import { busiestThreads, chromiumThreadTimes, rendererRssMb, summarizeTrace } from "./web-trace";
import { positiveOption } from "./options";

/** The JSON line printed last. */
export interface WebFigures {
  renderer: string;
  vehicles_in_view: number;
  updates_per_s: number;
  page_updates_per_s: number;
  main_thread_busy_share: number;
  frames_per_s: number;
  input_delay_p99_ms: number;
  /** The page's main-thread JS heap (a worker's is not in it). */
  heap_mb: number;
  /** Resident memory of the renderer process(es): main thread, workers and Blink together. */
  renderer_rss_mb?: number;
  bundle_bytes: number;
  bundle_gzip_bytes: number;
  /** Seconds from the page's load to the snapshot shown whole. */
  snapshot_s?: number;
  /** Input delay p99 while the snapshot loaded (a mouse move every 100 ms then too). */
  snapshot_input_delay_p99_ms?: number;
  /** The page's long tasks (> 50 ms, PerformanceObserver) while the snapshot loaded, and the longest. */
  snapshot_long_tasks?: number;
  snapshot_longest_task_ms?: number;
}

const GOALS = { busyShare: 0.5, inputP99Ms: 100 };
const root = join(import.meta.dir, "..");

export const WEB_HELP = `bun run bench web [options]

The dashboard in headless Chromium (Debian's chromium, software WebGL) with --vehicles vehicles in
view while a real tracker streams --rate updates/s to it (fed straight into the positions stream).
Measures the page's main-thread busy share, frames/s, input delay p99, JS heap and the bundle
size. Prints a table and last one JSON line with renderer, vehicles_in_view, updates_per_s,
page_updates_per_s, main_thread_busy_share, frames_per_s, input_delay_p99_ms, heap_mb,
bundle_bytes, bundle_gzip_bytes. Run it under flock /tmp/fleet-bench.lock.

Options:
  --vehicles N      vehicles in view, in 20 fleets (default 100000)
  --rate N          updates/s fed to the tracker (default 16700)
  --seconds N       measured window after a 3 s warm-up (default 10)
  --renderer NAME   worker (the dashboard's: deck.gl for the camera and overlays, the vehicles drawn
                    by a worker on a 2D OffscreenCanvas), worker-webgl (the same worker drawing with
                    WebGL2), deck (the vehicles in deck.gl's ScatterplotLayer on the page's thread),
                    maplibre (the page on MapLibre GL alone, vehicles in a GeoJSON source), or all
                    four one after the other (default worker)
  --profile         also record the page's CPU profile and a Chrome trace over the window
                    (.fleet/logs/bench-web-<renderer>.cpuprofile, .trace.json) and list the functions that
                    took the main thread, its long tasks (> 50 ms) with what ran in them and the thread
                    time they had, and the Chromium threads' CPU and run-queue wait (/proc); the
                    profiler's and the tracer's own cost inflate the figures
  --screenshot      also save what the page shows after the window (.fleet/logs/bench-web-<renderer>.png)
  --quick           a smoke run: 10,000 vehicles at 2,000 updates/s for 5 s
`;

interface Options {
  profile: boolean;
  screenshot: boolean;
  vehicles: number;
  rate: number;
  seconds: number;
  renderers: string[];
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      vehicles: { type: "string" },
      rate: { type: "string" },
      seconds: { type: "string" },
      renderer: { type: "string" },
      quick: { type: "boolean" },
      profile: { type: "boolean" },
      screenshot: { type: "boolean" },
    },
    strict: true,
  });
  const quick = values.quick ?? false;
  const num = positiveOption;
  const renderer = values.renderer ?? "worker";
  if (!["worker", "worker-webgl", "deck", "maplibre", "all"].includes(renderer))
    throw new Error(`--renderer "${renderer}": expected worker, worker-webgl, deck, maplibre or all`);
  const vehicles = num("vehicles", values.vehicles, quick ? 10_000 : 100_000);
  return {
    profile: values.profile ?? false,
    screenshot: values.screenshot ?? false,
    vehicles,
    rate: num("rate", values.rate, quick ? 2000 : 16_700),
    seconds: num("seconds", values.seconds, quick ? 5 : 10),
    renderers: renderer === "all" ? ["worker", "worker-webgl", "deck", "maplibre"] : [renderer],
  };
}

const say = (line: string) => process.stdout.write(`${line}\n`);

/** `p`'s value, or undefined when it takes longer than `ms` (a page whose main thread is stuck answers late). */
async function within<T>(ms: number, p: Promise<T>): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<undefined>((r) => {
    timer = setTimeout(() => r(undefined), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");

/** Fleets the vehicles belong to (a dispatcher's token names them all). */
const FLEETS = 20;

/** The box the bench's vehicles drive in (~22 × 15 km around Paris), shown whole by the page. */
const BOX = { minLat: 48.8, minLon: 2.25, maxLat: 48.95, maxLon: 2.55 };

/** A deterministic spread in [0, 1) (runs compare): murmur3's finaliser of (i, salt). */
const spread = (i: number, salt: number) => {
  let h = Math.imul(i ^ Math.imul(salt, 0x9e3779b9), 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 4294967296;
};

/** Vehicle i at its round-th point: a slow circle around its own spot, inside BOX. */
function benchPoint(i: number, round: number, nowMs: number): Position {
  const angle = round / 20 + spread(i, 3) * 6.28;
  return create(PositionSchema, {
    vehicleId: `web-${i}`,
    seq: round,
    recordedAt: timestampFromMs(nowMs),
    receivedAt: timestampFromMs(nowMs),
    lat: BOX.minLat + 0.002 + spread(i, 1) * (BOX.maxLat - BOX.minLat - 0.004) + Math.sin(angle) * 0.001,
    lon: BOX.minLon + 0.002 + spread(i, 2) * (BOX.maxLon - BOX.minLon - 0.004) + Math.cos(angle) * 0.001,
    speed: 8,
    heading: 90,
    accuracy: 5,
    fleetId: `fleet-${i % FLEETS}`,
    status: [VehicleStatus.ACTIVE, VehicleStatus.IDLE, VehicleStatus.ON_DELIVERY, VehicleStatus.AVAILABLE][i % 4]!,
  });
}

interface Publisher {
  /** Publishes the points in PositionBatch messages per partition (≤ 1,000 points each) and waits for JetStream's acks. */
  publish(points: Position[]): Promise<void>;
}

/** Runs the whole bench; returns the figures of the last renderer measured (each one's line is printed). */
export async function runWebBench(argv: string[]): Promise<WebFigures> {
  const o = parseOptions(argv);
  const started = performance.now();
  const elapsed = () => `${((performance.now() - started) / 1000).toFixed(0)}s`;
  const cleanups: (() => Promise<unknown>)[] = [];
  const onSignal = () => {
    say("interrupted: stopping what the bench started");
    void Promise.allSettled(cleanups.reverse().map((c) => c())).then(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const rows: WebFigures[] = [];
  try {
    say(
      `bench web: ${fmt(o.vehicles)} vehicles in view, ${fmt(o.rate)} updates/s, ${o.seconds} s measured; renderer ${o.renderers.join(", ")}`,
    );
    say(`[${elapsed()}] starting nats-server and redis-server (stack helper)`);
    const stack = await startStack({ services: ["nats", "redis"] });
    cleanups.push(() => stack.stop());
    const secret = randomBytes(24).toString("base64url");
    const keys = { secret, issuer: "fleet", audience: "fleet" };
    const config = loadConfig({ ...stack.env(), FLEET_JWT_SECRET: secret });
    const nc = await connect({ servers: stack.natsUrl });
    cleanups.push(() => nc.close());
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    await ensurePositionsStream(jsm, {
      duplicateWindow: config.duplicateWindow,
      streamMaxAge: config.streamMaxAge,
      streamMaxBytes: config.streamMaxBytes,
    });
    const publisher: Publisher = {
      async publish(points) {
        const parts = new Map<number, Position[]>();
        const pending: Promise<unknown>[] = [];
        const flush = (p: number) => {
          pending.push(
            js.publish(positionsSubject(p), toBinary(PositionBatchSchema, create(PositionBatchSchema, { positions: parts.get(p)! }))),
          );
          parts.set(p, []);
        };
        for (const point of points) {
          const p = partitionOf(point.vehicleId, config.partitions);
          const list = parts.get(p) ?? [];
          list.push(point);
          parts.set(p, list);
          if (list.length === 1000) flush(p);
        }
        for (const [p, list] of parts) if (list.length > 0) flush(p);
        await Promise.all(pending);
      },
    };

    mkdirSync(join(root, ".fleet", "logs"), { recursive: true });
    const trackerLog = join(root, ".fleet", "logs", "bench-web-tracker.log");
    say(`[${elapsed()}] starting the tracker (log: ${trackerLog})`);
    const tracker = await startServiceProcess({
      service: "tracker",
      env: {
        ...stack.env(),
        FLEET_JWT_SECRET: secret,
        LOG_LEVEL: "info",
        TRACKER_PORT: "0",
        // The dispatcher's token names the 20 fleets: the snapshot searches each fleet's set (5,000
        // vehicles) within this bound. The search widens its circle from 250 m and counts what it
        // reads again on each widening, and the circle around the box is ~1.6× the box: 5× the
        // set's size lets it finish. A page busy for a moment may hold many unsent updates.
        TRACKER_SCAN_MAX: String(Math.min(100_000, Math.max(2000, Math.ceil(o.vehicles / FLEETS) * 5))),
        TRACKER_WATCH_MAX_PENDING: String(Math.max(10_000, o.vehicles * 2)),
      },
      logFile: trackerLog,
    });
    cleanups.push(() => tracker.stop("SIGTERM", 5000));

    say(`[${elapsed()}] publishing ${fmt(o.vehicles)} vehicles into the positions stream`);
    const now = Date.now();
    for (let from = 0; from < o.vehicles; from += 20_000) {
      const points: Position[] = [];
      for (let i = from; i < Math.min(o.vehicles, from + 20_000); i++) points.push(benchPoint(i, 1, now));
      await publisher.publish(points);
    }
    const pointsTaken = async () =>
      (await fetchMetrics(tracker.adminUrl))
        .split("\n")
        .filter((l) => l.startsWith("tracker_points_total"))
        .reduce((s, l) => s + Number(l.split(" ").pop()), 0);
    while ((await pointsTaken()) < o.vehicles) {
      if (performance.now() - started > 300_000) throw new Error("the tracker did not take the vehicles within 5 minutes");
      await Bun.sleep(250);
    }
    say(`[${elapsed()}] the tracker holds them`);

    const webDir = mkdtempSync(join(tmpdir(), "fleet-bench-web-"));
    cleanups.push(async () => rmSync(webDir, { recursive: true, force: true }));
    const built = await buildWebApp({ trackerUrl: tracker.url, outDir: join(webDir, "size") });
    const gzipBytes = [...built.files.entries()]
      .filter(([path]) => path === "/app.js" || path === "/map-points-worker.js" || built.staticChunks.includes(path))
      .reduce((sum, [, file]) => sum + Bun.gzipSync(new Uint8Array(readFileSync(file))).length, 0);
    const web = await startWebApp({ trackerUrl: tracker.url, outDir: join(webDir, "serve"), host: "127.0.0.1", port: 0 });
    cleanups.push(() => web.stop());
    const token = await mintWatchToken(keys, { fleets: Array.from({ length: FLEETS }, (_, i) => `fleet-${i}`), subject: "bench-web" });
    say(`[${elapsed()}] dashboard bundle: ${fmt(built.bundleBytes)} bytes (${fmt(gzipBytes)} gzipped) loaded by default`);

    say(`[${elapsed()}] launching headless chromium (software WebGL)`);
    const browser = await launchBrowser();
    cleanups.push(() => browser.close());

    /** With --profile: a Chrome trace of the page (what summarizeTrace reads). */
    const startTrace = (page: Page) =>
      browser.browser.startTracing(page, {
        categories: [
          "toplevel",
          "devtools.timeline",
          "disabled-by-default-devtools.timeline",
          "v8",
          "v8.execute",
          "blink",
          "input",
          "gpu",
          "cc",
          "viz",
        ],
      });
    const stopTrace = async (name: string) => {
      const traceFile = join(root, ".fleet", "logs", name);
      const trace = await browser.browser.stopTracing();
      await Bun.write(traceFile, trace);
      const ts = summarizeTrace(trace.toString("utf8"));
      say(
        `  trace ${traceFile}: main thread ${ts.main.tasks} tasks, ${(ts.main.busyMs / ts.main.spanMs).toFixed(2)} busy (wall), ${(ts.main.cpuMs / ts.main.spanMs).toFixed(2)} on a core; ${ts.longTasks.length} long tasks (> 50 ms):`,
      );
      for (const t of ts.longTasks)
        say(
          `    at ${(t.atMs / 1000).toFixed(2)} s: ${t.wallMs.toFixed(0)} ms wall, ${t.cpuMs.toFixed(0)} ms thread time: ${t.inside.map((i) => `${i.name} ${i.ms.toFixed(0)}`).join(", ")}`,
        );
      say("  other threads of the page and the GPU process (busy ms over the trace, thread ms):");
      for (const t of ts.threads.slice(0, 8)) say(`    ${t.busyMs.toFixed(0).padStart(6)} ${t.cpuMs.toFixed(0).padStart(6)}  ${t.name}`);
    };

    // The feed runs from here to the end: every 50 ms the next slice of vehicles moves.
    let feeding = true;
    let sent = 0;
    let round = 2;
    let next = 0;
    const perTick = Math.max(1, Math.round(o.rate / 20));
    const inFlight = new Set<Promise<unknown>>();
    const feed = (async () => {
      let tick = performance.now();
      while (feeding) {
        const t = Date.now();
        const points: Position[] = [];
        for (let k = 0; k < perTick; k++) {
          points.push(benchPoint(next, round, t));
          if (++next === o.vehicles) {
            next = 0;
            round++;
          }
        }
        // Not waiting for JetStream's acks before the next tick (up to 20 ticks in flight): the
        // rate is the clock's, not one round trip's.
        const publishing: Promise<unknown> = publisher
          .publish(points)
          .then(() => {
            sent += points.length;
          })
          .finally(() => inFlight.delete(publishing));
        inFlight.add(publishing);
        while (inFlight.size >= 20) await Promise.race(inFlight);
        tick += 50;
        const wait = tick - performance.now();
        if (wait > 0) await Bun.sleep(wait);
        else tick = performance.now();
      }
    })();
    cleanups.push(async () => {
      feeding = false;
      await feed.catch(() => {});
      await Promise.allSettled(inFlight);
    });

    for (const renderer of o.renderers) {
      const url = pageUrl(web.url, token, {
        box: `${BOX.minLat},${BOX.minLon},${BOX.maxLat},${BOX.maxLon}`,
        ...(renderer === "worker" ? {} : renderer === "worker-webgl" ? { points: "webgl" } : { renderer }),
      });
      say(`[${elapsed()}] ${renderer}: opening the dashboard; waiting for the ${fmt(o.vehicles)}-vehicle snapshot`);
      const opened = await openPage(browser.browser, url);
      const { page } = opened;
      const loadStarted = performance.now();
      const fleet = <T>(expr: string) => page.evaluate(`window.__fleet && window.__fleet.${expr}`) as Promise<T>;
      // The page's input handler notes how long each event waited for the main thread, and an
      // observer the page's long tasks (> 50 ms), from the snapshot's start.
      await page.evaluate(() => {
        const w = window as unknown as { __inputDelays: number[]; __inputEvents: number; __longTasks: number[] };
        w.__inputDelays = [];
        w.__inputEvents = 0;
        w.__longTasks = [];
        // Moves that came while the page was busy reach it as one event (Chromium coalesces them
        // until the next frame): each counts, with its own wait.
        window.addEventListener(
          "pointermove",
          (e) => {
            const now = performance.now();
            w.__inputEvents++;
            const each = e.getCoalescedEvents?.() ?? [];
            if (each.length === 0) w.__inputDelays.push(now - e.timeStamp);
            for (const c of each) w.__inputDelays.push(now - c.timeStamp);
          },
          { capture: true },
        );
        new PerformanceObserver((list) => {
          for (const t of list.getEntries()) w.__longTasks.push(t.duration);
        }).observe({ type: "longtask" });
      });
      if (o.profile) await startTrace(page);
      // While the snapshot loads, a mouse move every 100 ms as in the window below.
      const loadMoves: number[] = [];
      const loadMover = setInterval(() => {
        loadMoves.push(performance.now());
        page.mouse.move(400 + (loadMoves.length % 2) * 40, 400).catch(() => {});
      }, 100);
      const until = Date.now() + 180_000;
      while (!((await fleet<boolean>("live()")) && (await fleet<number>("vehicleCount()")) >= o.vehicles * 0.99)) {
        if (Date.now() > until || (await fleet<string>("connection()"))?.startsWith("waiting"))
          throw new Error(
            `${renderer}: the page did not show the vehicles within 3 minutes (shown ${await fleet<number>("vehicleCount()")}, connection ${await fleet<string>("connection()")}, page says "${await fleet<string>("error()")}"; ${opened.errors.join("; ")})`,
          );
        await Bun.sleep(500);
      }
      clearInterval(loadMover);
      if (o.profile) {
        say(`  ${renderer}: while the snapshot loaded:`);
        await stopTrace(`bench-web-${renderer}-snapshot.trace.json`);
      }
      const snapshotS = (performance.now() - loadStarted) / 1000;
      await Bun.sleep(1000);
      const load = (await within(
        60_000,
        page.evaluate(() => {
          const w = window as unknown as { __inputDelays: number[]; __longTasks: number[] };
          return { delays: w.__inputDelays, longTasks: w.__longTasks };
        }),
      )) ?? { delays: [], longTasks: [] };
      const loadH = createHistogram();
      for (const d of load.delays) loadH.record(d);
      const loadReadAt = performance.now();
      const loadUnhandled = Math.max(0, loadMoves.length - load.delays.length);
      for (const t of loadMoves.slice(loadMoves.length - loadUnhandled)) loadH.record(loadReadAt - t);
      const snapshotFigures = {
        snapshot_s: Number(snapshotS.toFixed(1)),
        snapshot_input_delay_p99_ms: Number(loadH.quantile(0.99).toFixed(1)),
        snapshot_long_tasks: load.longTasks.length,
        snapshot_longest_task_ms: Math.round(Math.max(0, ...load.longTasks)),
      };
      say(
        `[${elapsed()}] ${renderer}: ${fmt(await fleet<number>("vehicleCount()"))} vehicles shown after ${snapshotS.toFixed(1)} s; while it loaded: ${loadMoves.length} mouse moves, input delay p99 ${snapshotFigures.snapshot_input_delay_p99_ms} ms, ${load.longTasks.length} long tasks (> 50 ms), the longest ${snapshotFigures.snapshot_longest_task_ms} ms; 3 s warm-up`,
      );
      const measure = async (): Promise<WebFigures> => {
        await Bun.sleep(3000);
        const cdp = await page.context().newCDPSession(page);
        await cdp.send("Performance.enable");
        const metrics = async () => {
          const { metrics: list } = await cdp.send("Performance.getMetrics");
          return Object.fromEntries(list.map((m: { name: string; value: number }) => [m.name, m.value])) as Record<string, number>;
        };
        await page.evaluate(() => {
          (window as unknown as { __inputDelays: number[] }).__inputDelays = [];
          (window as unknown as { __inputEvents: number }).__inputEvents = 0;
          (window as unknown as { __longTasks: number[] }).__longTasks = [];
        });
        if (o.profile) {
          await cdp.send("Profiler.enable");
          await cdp.send("Profiler.start");
          await startTrace(page);
        }
        const threads0 = o.profile ? chromiumThreadTimes() : undefined;
        const m0 = await metrics();
        const f0 = await fleet<number>("frames()");
        const sent0 = sent;
        const t0 = performance.now();
        const busyPerSecond: number[] = [];
        let last = m0;
        let lastT = t0;
        let moves = 0;
        const movedAt: number[] = [];
        // A mouse move every 100 ms over the map, not awaited: a page whose main thread is stuck
        // queues them, and the window stays --seconds of wall time.
        const mover = setInterval(() => {
          moves++;
          movedAt.push(performance.now());
          page.mouse.move(400 + (moves % 2) * 40, 400 + (moves % 3) * 20).catch(() => {});
        }, 100);
        while (performance.now() - t0 < o.seconds * 1000) {
          await Bun.sleep(1000);
          const m = await within(5000, metrics());
          if (!m) continue;
          const now = performance.now();
          busyPerSecond.push((m.TaskDuration! - last.TaskDuration!) / ((now - lastT) / 1000));
          last = m;
          lastT = now;
        }
        clearInterval(mover);
        // A page that never answered: its main thread was busy the whole time.
        const m1 = (await within(60_000, metrics())) ?? { ...m0, TaskDuration: m0.TaskDuration! + (performance.now() - t0) / 1000 };
        if (o.profile) {
          const secs = (performance.now() - t0) / 1000;
          say(`  ${renderer}: Chromium threads over the window (CPU share of a core, share of the time waiting for one):`);
          for (const t of busiestThreads(threads0!, chromiumThreadTimes(), secs, 12))
            say(`    ${t.cpu.toFixed(2).padStart(5)} cpu  ${t.wait.toFixed(2).padStart(5)} wait  ${t.name}`);
          await stopTrace(`bench-web-${renderer}.trace.json`);
          const { profile } = await cdp.send("Profiler.stop");
          const file = join(root, ".fleet", "logs", `bench-web-${renderer}.cpuprofile`);
          await Bun.write(file, JSON.stringify(profile));
          const summary = summarizeProfile(file, 20);
          say(`  ${renderer}: profile ${file} (${summary.samples} samples); by self time:`);
          for (const l of summary.functions) say(`    ${(l.share * 100).toFixed(1).padStart(5)}%  ${l.name}`);
        }
        const wall = (performance.now() - t0) / 1000;
        const frames = ((await within(60_000, fleet<number>("frames()"))) ?? f0) - f0;
        // The last moves are still on their way: a second to arrive before they are counted.
        await Bun.sleep(1000);
        const { delays, events, longTasks } = (await within(
          60_000,
          page.evaluate(() => {
            const w = window as unknown as { __inputDelays: number[]; __inputEvents: number; __longTasks: number[] };
            return { delays: w.__inputDelays, events: w.__inputEvents, longTasks: w.__longTasks };
          }),
        )) ?? { delays: [], events: 0, longTasks: [] };
        const h = createHistogram();
        for (const d of delays) h.record(d);
        // Moves the page had not handled by then (the last ones sent) waited at least until now.
        const readAt = performance.now();
        const unhandled = Math.max(0, moves - delays.length);
        for (const t of movedAt.slice(moves - unhandled)) h.record(readAt - t);
        const pageRate = (await within(60_000, fleet<number>("updateRate()"))) ?? Number.NaN;
        const f: WebFigures = {
          renderer,
          vehicles_in_view: (await within(60_000, fleet<number>("vehicleCount()"))) ?? Number.NaN,
          updates_per_s: Math.round((sent - sent0) / wall),
          page_updates_per_s: Math.round(pageRate),
          main_thread_busy_share: Number(((m1.TaskDuration! - m0.TaskDuration!) / wall).toFixed(3)),
          frames_per_s: Number((frames / wall).toFixed(1)),
          input_delay_p99_ms: Number(h.quantile(0.99).toFixed(1)),
          heap_mb: Number((m1.JSHeapUsedSize! / 1024 / 1024).toFixed(1)),
          renderer_rss_mb: Math.round(rendererRssMb()),
          bundle_bytes: built.bundleBytes,
          bundle_gzip_bytes: gzipBytes,
          ...snapshotFigures,
        };
        say(
          `  ${renderer}: busy per second ${busyPerSecond.map((b) => b.toFixed(2)).join(" ")}; ${moves} mouse moves, ${delays.length} handled in the window (${delays.length - events} coalesced into a later event: they came within one frame); ${longTasks.length} long tasks (> 50 ms)${longTasks.length ? `, the longest ${Math.round(Math.max(...longTasks))} ms` : ""}; ${frames} frames; page errors: ${opened.errors.length ? opened.errors.join("; ") : "none"}`,
        );
        return f;
      };
      // A page whose main thread never comes free (deck.gl or MapLibre drawing 100,000 vehicles in
      // software) may not answer the browser's protocol for minutes: it is given up and said so.
      const deadlineMs = (o.seconds + 150) * 1000;
      const measuring = measure();
      measuring.catch(() => {});
      const f = await within(deadlineMs, measuring);
      if (f) {
        rows.push(f);
        const shot = join(root, ".fleet", "logs", `bench-web-${renderer}.png`);
        if (
          o.screenshot &&
          (await within(
            30_000,
            page.screenshot({ path: shot }).then(() => true),
          ))
        )
          say(`  ${renderer}: screenshot ${shot}`);
      } else {
        say(
          `  ${renderer}: the page did not answer for ${deadlineMs / 1000} s: its main thread never came free; counted as busy all the time`,
        );
        rows.push({
          renderer,
          vehicles_in_view: o.vehicles,
          updates_per_s: o.rate,
          page_updates_per_s: Number.NaN,
          main_thread_busy_share: 1,
          frames_per_s: Number.NaN,
          input_delay_p99_ms: deadlineMs,
          heap_mb: Number.NaN,
          bundle_bytes: built.bundleBytes,
          bundle_gzip_bytes: gzipBytes,
          ...snapshotFigures,
        });
      }
      await within(30_000, opened.close());
    }
    feeding = false;
    await feed;

    say("");
    say(
      "| renderer | vehicles in view | updates/s fed | updates/s the page counted | main thread busy | frames/s | input delay p99 (while the snapshot loaded) | main-thread JS heap (renderer RSS) | bundle (gzip) |",
    );
    say("|---|---|---|---|---|---|---|---|---|");
    for (const f of rows)
      say(
        `| ${f.renderer} | ${fmt(f.vehicles_in_view)} | ${fmt(f.updates_per_s)} | ${fmt(f.page_updates_per_s)} | ${(f.main_thread_busy_share * 100).toFixed(0)}% (goal ≤ ${GOALS.busyShare * 100}%) | ${f.frames_per_s} | ${f.input_delay_p99_ms} ms (goal ≤ ${GOALS.inputP99Ms}) (${f.snapshot_input_delay_p99_ms ?? "–"} ms) | ${f.heap_mb} MB (${f.renderer_rss_mb ?? "–"} MB) | ${fmt(f.bundle_bytes)} B (${fmt(f.bundle_gzip_bytes)}) |`,
      );
    for (const f of rows.slice(0, -1)) say(JSON.stringify(f));
    say(JSON.stringify(rows.at(-1)));
    return rows.at(-1)!;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await Promise.allSettled(cleanups.reverse().map((c) => c()));
  }
}
