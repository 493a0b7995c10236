/**
 * `bun run bench history`: history and archive figures, in one run on this machine (loopback only):
 *
 * 1. 1M simulated points (1,000 vehicles × 1,000 s, the simulator's city model, no bad fixes).
 * 2. copy_ceiling_rows_per_s: a plain COPY of those rows (20,000 per COPY, the writer's transaction
 *    size) into a table of the same shape (day partition, primary key).
 * 3. history_rows_per_s: the same points published to JetStream first, then `bun history/main.ts`
 *    started; rows/s from its "listening" line until every row is in PostgreSQL.
 * 4. history_lag_p99_ms: 16,700 points/s published to JetStream (as the gateway does: per partition,
 *    every 5 ms) for 20 s; a probe point every 50 ms; lag = probe published → row visible to a
 *    reader polling every 5 ms. The gateway's part (vehicle → PubAck) is `bench ingest`'s ack latency.
 * 5. track_p99_ms: GetTrack of one vehicle-day at 1 point/s (86,400 points, five vehicle-days sent
 *    through JetStream and written by history, their hours packed), budget 1,000, 200 calls one after
 *    another (after 5 unmeasured ones that open the service's connections); then the same with the
 *    packs deleted (track_unpacked_p99_ms, every row read).
 * 6. Parquet writers on the day of step 1: DuckDB vs parquetjs-lite.
 * 7. archive_rows_per_s: the archiver over the days of steps 1 and 5 to s3rver; parquet_bytes_per_point
 *    of the simulated day of step 1 (the smooth synthetic day of step 5 apart).
 * 8. duckdb_vehicle_day_ms: one vehicle-day from a 10.4M-point archive (10 days × 12 vehicles ×
 *    86,400 points, synthetic tracks written with the archiver's writer settings), median of 5.
 */
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ArchiveService } from "../gen/fleet/v1/archive_pb";
import { HistoryService } from "../gen/fleet/v1/history_pb";
import { PositionBatchSchema, PositionSchema, type Position } from "../gen/fleet/v1/position_pb";
import { PARQUET_OPTIONS } from "../archiver/parquet-writer";
import {
  FILE_SELECT,
  openDuckDb,
  positionsViewSql,
  sqlString,
  connectPostgres,
  copyFrom,
  DAY_MS,
  dayOf,
  migrate,
  partitionName,
} from "../lib/storage";
import { mintWatchToken, tokenKeys } from "../lib/auth";
import { loadConfig } from "../lib/config";
import { connectNats, ensurePositionsStream, partitionOf, positionsSubject } from "../lib/nats";
import { createLogger } from "../lib/log";
import { startServiceProcess, startStack } from "../dev";
import { cpuMeter } from "./proc";
import { createCity, createRng, createVehicleModel } from "../sim/route";
import { createHistogram } from "./histogram";
import { bucketBound, fetchMetrics, histogramBetween } from "./prom-histogram";
import { createTrackPacker } from "../history/track-hours";
import { duckdbWriter, exportSortedDayCsv, parquetjsWriter, type WriterFigures } from "./history-parquet";

export const HISTORY_HELP = `bun run bench history [options]

Measures the history writer against a plain COPY, its lag at 16,700 points/s, GetTrack, the
Parquet writers, the archiver and DuckDB over a 10M-point archive, in one run (~3 minutes).
Prints progress, a table, and last one JSON line.

Options:
  --points N        points of the throughput phase (default 1000000)
  --archive-days N  days of the DuckDB archive, 12 vehicle-days of 86,400 points each (default 10)
  --quick           small sizes, for a smoke run
`;

const TARGETS = { ratio: 0.7, lagP99: 1000, trackP99: 100, bytesPerPoint: 10, archiveRowsPerS: 500_000, vehicleDayMs: 200 };

const log = (line: string) => console.log(`[history] ${line}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** CPU shares of a phase; "rest of machine" is PostgreSQL's backends here, as nothing else runs. */
const cpuLine = (shares: Record<string, number>) =>
  Object.entries(shares)
    .map(([k, v]) => `${k === "rest of machine" ? "rest of machine (PostgreSQL)" : k} ${v.toFixed(2)}`)
    .join(", ");

function simulate(vehicles: number, seconds: number, startMs: number): Position[] {
  const city = createCity();
  const rng = createRng(42);
  const models = Array.from({ length: vehicles }, (_, v) =>
    createVehicleModel(city, `veh-${String(v).padStart(5, "0")}`, rng, { badFixRate: 0 }),
  );
  const out: Position[] = [];
  for (let s = 0; s < seconds; s++) {
    for (let v = 0; v < vehicles; v++) {
      const m = models[v]!;
      m.step(1, s + 1);
      const now = startMs + s * 1000;
      const fix = m.fix(now);
      out.push(create(PositionSchema, { ...fix.position, seq: s + 1, fleetId: `fleet-${v % 10}`, receivedAt: timestampFromMs(now + 40) }));
    }
  }
  return out;
}

export async function runHistoryBench(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { points: { type: "string" }, "archive-days": { type: "string" }, quick: { type: "boolean" } },
  });
  const quick = values.quick ?? false;
  const points = Number(values.points ?? (quick ? 50_000 : 1_000_000));
  const archiveDaysN = Number(values["archive-days"] ?? (quick ? 1 : 10));
  const vehicles = 1000;
  const seconds = Math.ceil(points / vehicles);

  const work = mkdtempSync(join(tmpdir(), "fleet-bench-history-"));
  log("starting nats-server, PostgreSQL, s3rver");
  const stack = await startStack({ services: ["nats", "postgres", "s3"], env: {} });
  const schema = "bench";
  const env = {
    ...stack.env(),
    HISTORY_DB_SCHEMA: schema,
    HISTORY_PORT: "0",
    ARCHIVER_PORT: "0",
    ARCHIVE_INTERVAL: "0",
    LOG_LEVEL: "info",
  };
  const config = loadConfig(env);
  const sql = connectPostgres({ url: stack.databaseUrl, schema, max: 4 });
  const quiet = createLogger({ level: "warn" });
  const nats = await connectNats({ url: stack.natsUrl, name: "bench-history", log: quiet });
  let history;
  try {
    await migrate(sql, { schema, log: quiet });
    await ensurePositionsStream(nats.jsm, {
      duplicateWindow: config.duplicateWindow,
      streamMaxAge: config.streamMaxAge,
      streamMaxBytes: config.streamMaxBytes,
    });

    // 1. data
    const today = Math.floor(Date.now() / DAY_MS) * DAY_MS;
    const d0 = today - 3 * DAY_MS;
    let t = performance.now();
    const pts = simulate(vehicles, seconds, d0 + 10 * 3600_000).slice(0, points);
    log(`simulated ${pts.length} points in ${((performance.now() - t) / 1000).toFixed(1)} s (day ${dayOf(d0)})`);

    // 2. COPY ceiling
    await sql.unsafe(`CREATE TABLE ceiling (LIKE positions INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (recorded_at)`);
    await sql.unsafe(`ALTER TABLE ceiling ADD PRIMARY KEY (vehicle_id, recorded_at)`);
    await sql.unsafe(`CREATE TABLE ceiling_d0 PARTITION OF ceiling FOR VALUES FROM ('${dayOf(d0)}') TO ('${dayOf(d0 + DAY_MS)}')`);
    const chunks: string[] = [];
    for (let i = 0; i < pts.length; i += 20_000) {
      let text = "";
      for (const p of pts.slice(i, i + 20_000)) {
        const ms = Number(p.recordedAt!.seconds) * 1000;
        text += `${p.vehicleId}\t${new Date(ms).toISOString()}\t${p.seq}\t${p.fleetId}\t${p.lat}\t${p.lon}\t${p.speed}\t${p.heading}\t${p.accuracy}\t${p.orderId}\t${p.status}\t${new Date(ms + 40).toISOString()}\n`;
      }
      chunks.push(text);
    }
    t = performance.now();
    const ceilingMeter = cpuMeter({ bench: process.pid }, { rest: true });
    for (const text of chunks) await copyFrom(sql, `COPY ceiling FROM STDIN`, text);
    const ceilingCpu = ceilingMeter.stop();
    const [{ n: ceilingRows }] = (await sql`SELECT count(*)::int AS n FROM ceiling`) as unknown as [{ n: number }];
    const copyCeiling = Math.round(ceilingRows / ((performance.now() - t) / 1000));
    log(
      `COPY ceiling: ${ceilingRows} rows, ${copyCeiling.toLocaleString()} rows/s; CPU meanwhile (1.00 = one core): ${cpuLine(ceilingCpu)}`,
    );
    await sql.unsafe(`DROP TABLE ceiling`);

    // 3. history throughput from a backlog
    t = performance.now();
    const byPartition = new Map<number, Position[]>();
    let published = 0;
    const flush = async (part: number) => {
      const batch = byPartition.get(part)!;
      byPartition.set(part, []);
      await nats.js.publish(positionsSubject(part), toBinary(PositionBatchSchema, create(PositionBatchSchema, { positions: batch })), {
        msgID: `bench-${part}-${published}`,
      });
      published += batch.length;
    };
    for (const p of pts) {
      const part = partitionOf(p.vehicleId, config.partitions);
      const list = byPartition.get(part) ?? [];
      list.push(p);
      byPartition.set(part, list);
      if (list.length >= 1000) await flush(part);
    }
    for (const [part, list] of byPartition) if (list.length) await flush(part);
    log(`published ${published} points to JetStream in ${((performance.now() - t) / 1000).toFixed(1)} s; starting history`);
    history = await startServiceProcess({ service: "history", env, logFile: join(work, "history.log") });
    const started = performance.now();
    const historyMeter = cpuMeter({ history: history.pid, nats: stack.pid("nats") }, { rest: true });
    const rowsWritten = async () => {
      const text = await fetchMetrics(history!.adminUrl);
      const m = /^history_rows_written_total\{[^}]*\} (\d+)/m.exec(text);
      return m ? Number(m[1]) : 0;
    };
    let last = 0;
    while ((last = await rowsWritten()) < published) {
      await sleep(100);
      if (performance.now() - started > 600_000) throw new Error(`history wrote ${last} of ${published} rows in 10 minutes`);
    }
    const historyRowsPerS = Math.round(published / ((performance.now() - started) / 1000));
    const historyCpu = historyMeter.stop();
    log(
      `history: ${published} rows in ${((performance.now() - started) / 1000).toFixed(1)} s = ${historyRowsPerS.toLocaleString()} rows/s; CPU meanwhile: ${cpuLine(historyCpu)}`,
    );

    // 4. lag at 16,700 points/s
    const metricsBefore = await fetchMetrics(history!.adminUrl);
    const rate = 16_700;
    const lagSeconds = quick ? 5 : 20;
    const hist = createHistogram();
    const sentAt = new Map<number, number>();
    let seen = 0;
    let probeSeq = 0;
    let running = true;
    const poller = (async () => {
      while (running || seen < probeSeq) {
        const [r] = await sql`SELECT coalesce(max(seq), 0)::int AS s FROM positions WHERE vehicle_id = 'probe'`;
        const now = performance.now();
        for (let k = seen + 1; k <= (r!.s as number); k++) {
          hist.record(now - sentAt.get(k)!);
          sentAt.delete(k);
        }
        seen = Math.max(seen, r!.s as number);
        await sleep(5);
      }
    })();
    const lagModels = simulate(2000, 1, Date.now()); // positions for 2,000 vehicles, re-timed below
    const tickMs = 5;
    const perTick = Math.round((rate * tickMs) / 1000);
    const begin = performance.now();
    let sent = 0;
    let tick = 0;
    let nextProbe = begin;
    while (performance.now() - begin < lagSeconds * 1000) {
      const due = begin + tick * tickMs;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      tick++;
      const now = Date.now();
      const parts = new Map<number, Position[]>();
      for (let i = 0; i < perTick; i++) {
        const base = lagModels[(sent + i) % lagModels.length]!;
        // Unique per vehicle: a vehicle comes back every 2,000 points (>1 tick); µs of the tick apart.
        const recordedAt = timestampFromMs(now);
        recordedAt.nanos += (tick % 1000) * 1000;
        const p = create(PositionSchema, { ...base, seq: sent + i + 1, recordedAt, receivedAt: timestampFromMs(now) });
        const part = partitionOf(p.vehicleId, config.partitions);
        (parts.get(part) ?? parts.set(part, []).get(part)!).push(p);
      }
      sent += perTick;
      if (performance.now() >= nextProbe) {
        nextProbe += 50;
        probeSeq++;
        const p = create(PositionSchema, {
          vehicleId: "probe",
          seq: probeSeq,
          recordedAt: timestampFromMs(now),
          lat: 52.5,
          lon: 13.4,
          fleetId: "bench",
        });
        const part = partitionOf("probe", config.partitions);
        (parts.get(part) ?? parts.set(part, []).get(part)!).push(p);
        sentAt.set(probeSeq, performance.now());
      }
      for (const [part, list] of parts) {
        void nats.js.publish(positionsSubject(part), toBinary(PositionBatchSchema, create(PositionBatchSchema, { positions: list })), {
          msgID: `lag-${part}-${tick}`,
        });
      }
    }
    const offered = Math.round(sent / ((performance.now() - begin) / 1000));
    running = false;
    await Promise.race([poller, sleep(30_000)]);
    const lagP50 = hist.quantile(0.5);
    const lagP99 = hist.quantile(0.99);
    log(
      `lag at ${offered.toLocaleString()} points/s offered: ${hist.count} probes, p50 ${lagP50.toFixed(1)} ms, p99 ${lagP99.toFixed(1)} ms, max ${hist.max.toFixed(1)} ms`,
    );
    const metricsAfter = await fetchMetrics(history!.adminUrl);
    const during = (name: string) => histogramBetween(metricsBefore, metricsAfter, name);
    const commits = during("history_batch_commit_seconds");
    const rowsPer = during("history_batch_rows");
    log(
      `  history's write transactions meanwhile: ${commits.count}, ${(rowsPer.sum / Math.max(1, rowsPer.count)).toFixed(0)} rows each on average, ` +
        `${((commits.sum / Math.max(1, commits.count)) * 1000).toFixed(1)} ms each on average, 99% within ${(bucketBound(commits, 0.99) * 1000).toFixed(0)} ms (its buckets)`,
    );

    // 5. GetTrack of a vehicle-day: five vehicle-days two days old, sent through JetStream and written
    // by history as vehicles' points are; their hours packed (history/track-hours.ts) as history's own
    // packer would within HISTORY_TRACK_PACK_INTERVAL, here at once.
    const d1 = today - 2 * DAY_MS;
    t = performance.now();
    const dayPoints = 5 * 86_400;
    for (let v = 1; v <= 5; v++) {
      for (let i0 = 0; i0 < 86_400; i0 += 1000) {
        const positions: Position[] = [];
        for (let i = i0; i < Math.min(i0 + 1000, 86_400); i++) {
          positions.push(
            create(PositionSchema, {
              vehicleId: `day-${v}`,
              seq: i + 1,
              recordedAt: timestampFromMs(d1 + i * 1000),
              receivedAt: timestampFromMs(d1 + i * 1000 + 40),
              fleetId: "fleet-1",
              lat: 52.5 + 0.02 * Math.sin(i / 3000 + v) + (i % 7) * 1e-6,
              lon: 13.4 + 0.03 * Math.cos(i / 2000 + v),
              speed: Math.floor(i / 600) % 5 === 0 ? 0 : 12,
              heading: Math.floor(i / 50) % 360,
              accuracy: 5,
            }),
          );
        }
        await nats.js.publish(
          positionsSubject(partitionOf(`day-${v}`, config.partitions)),
          toBinary(PositionBatchSchema, create(PositionBatchSchema, { positions })),
          {
            msgID: `day-${v}-${i0}`,
          },
        );
      }
    }
    const countDays = async () => Number((await sql`SELECT count(*)::int AS n FROM positions WHERE vehicle_id LIKE 'day-%'`)[0]!.n);
    while ((await countDays()) !== dayPoints) {
      await sleep(100);
      if (performance.now() - t > 300_000) throw new Error("history did not write the 5 vehicle-days within 5 minutes");
    }
    const written = (performance.now() - t) / 1000;
    t = performance.now();
    const packer = createTrackPacker({ sql, mode: "plain", schema, delayMs: config.trackPackDelay, log: quiet });
    // Another run (the service's) may hold the packer's lock: go on until nothing of these days waits.
    while (Number((await sql`SELECT count(*)::int AS n FROM track_dirty WHERE vehicle_id LIKE 'day-%'`)[0]!.n) > 0) {
      await packer.run();
      await sleep(50);
    }
    const packedHours = Number((await sql`SELECT count(*)::int AS n FROM track_hours WHERE vehicle_id LIKE 'day-%'`)[0]!.n);
    log(
      `5 vehicle-days (${dayPoints.toLocaleString()} points) through JetStream into PostgreSQL in ${written.toFixed(1)} s; ${packedHours} hours packed in ${((performance.now() - t) / 1000).toFixed(1)} s`,
    );
    // Vacuumed as autovacuum would have done long before anyone asks for a day two days old, so that
    // its run on these 432,000 fresh rows does not share the 2 cores with the calls measured.
    await sql.unsafe(`VACUUM (ANALYZE) ${partitionName(dayOf(d1))}`);
    const token = await mintWatchToken(tokenKeys(config), { all: true });
    const client = createClient(HistoryService, createGrpcTransport({ baseUrl: history.url }));
    const measureTrack = async (calls: number) => {
      const h = createHistogram();
      let kept = 0;
      // Five calls first, not measured: the service's pool opens its connections on first use.
      for (let i = -5; i < calls; i++) {
        const ts = performance.now();
        const r = await client.getTrack(
          { vehicleId: `day-${1 + ((i + 5) % 5)}`, from: timestampFromMs(d1), to: timestampFromMs(d1 + DAY_MS), maxPoints: 1000 },
          { headers: { authorization: `Bearer ${token}` } },
        );
        if (i >= 0) h.record(performance.now() - ts);
        kept = r.points.length;
        if (r.totalPoints !== 86_400n) throw new Error(`GetTrack saw ${r.totalPoints} points, expected 86400`);
      }
      return { p50: h.quantile(0.5), p99: h.quantile(0.99), kept };
    };
    // 200 calls: the p99 of 60 was, in effect, their slowest one (one GC pause or busy moment decided it).
    const calls = quick ? 10 : 200;
    const packedTrack = await measureTrack(calls);
    const trackP50 = packedTrack.p50;
    const trackP99 = packedTrack.p99;
    log(
      `GetTrack vehicle-day (86,400 → ${packedTrack.kept} points) from packed hours: p50 ${trackP50.toFixed(1)} ms, p99 ${trackP99.toFixed(1)} ms over ${calls} calls`,
    );
    // The same without the packs (today's hours, or a packer behind): every row read.
    await sql`DELETE FROM track_hours WHERE vehicle_id LIKE 'day-%'`;
    const rowsTrack = await measureTrack(calls);
    log(
      `GetTrack vehicle-day from the rows (no packs): p50 ${rowsTrack.p50.toFixed(1)} ms, p99 ${rowsTrack.p99.toFixed(1)} ms over ${calls} calls`,
    );
    await history.stop("SIGTERM");
    history = undefined;

    // 6. Parquet writers on the day of step 1
    const duck = await openDuckDb();
    const conn = await duck.connect();
    const csv = join(work, "d0.csv");
    const csvRows = await exportSortedDayCsv(sql, dayOf(d0), csv);
    const duckW = await duckdbWriter(conn, csv, work, csvRows);
    log(
      `DuckDB writer: ${duckW.rows_per_s.toLocaleString()} rows/s, ${duckW.bytes_per_point.toFixed(2)} B/point, DuckDB scan ${duckW.duckdb_scan_ms.toFixed(1)} ms`,
    );
    const pjsW: WriterFigures = await parquetjsWriter(conn, csv, work, csvRows);
    log(
      `parquetjs-lite writer: ${pjsW.rows_per_s.toLocaleString()} rows/s, ${pjsW.bytes_per_point.toFixed(2)} B/point, DuckDB scan ${pjsW.duckdb_scan_ms.toFixed(1)} ms`,
    );
    rmSync(csv, { force: true });

    // 7. the archiver over days d0 and d1 to s3rver. Vacuumed first, not timed: the archiver moves days
    // older than the hot retention (7 days by default), which autovacuum has long since visited; the
    // first scan of rows written seconds ago also sets their hint bits, work a real archive run never does.
    await sql.unsafe(`VACUUM ${partitionName(dayOf(d0))}, ${partitionName(dayOf(d1))}`);
    // The archiver in a process of its own, as it runs in production (`bun archiver/main.ts`), asked
    // for one run over RunArchive: in this process it shared a heap made large by the steps above.
    const archiverLog = join(work, "archiver.log");
    const archiver = await startServiceProcess({ service: "archiver", env: { ...env, HISTORY_HOT_RETENTION: "1d" }, logFile: archiverLog });
    const adminToken = await mintWatchToken(tokenKeys(config), { admin: true });
    const archiveClient = createClient(ArchiveService, createGrpcTransport({ baseUrl: archiver.url }));
    t = performance.now();
    const perDay = new Map<string, { rows: number; bytes: number }>();
    try {
      for await (const p of archiveClient.runArchive(
        { olderThan: timestampFromMs(today - DAY_MS) },
        { headers: { authorization: `Bearer ${adminToken}` } },
      )) {
        if (p.step === "drop" && p.partition)
          perDay.set(p.partition.day, { rows: Number(p.partition.rows), bytes: Number(p.partition.bytes) });
      }
    } finally {
      await archiver.stop("SIGTERM", 10_000);
    }
    const archiveS = (performance.now() - t) / 1000;
    // Where each day's time went, as the archiver logged it.
    const steps = new Map<string, Record<string, unknown>>();
    for (const line of (await Bun.file(archiverLog).text()).split("\n")) {
      if (line.includes('"archive: day written"') || line.includes('"archive: day archived and dropped"')) {
        const d = JSON.parse(line) as Record<string, unknown>;
        steps.set(String(d.day), { ...steps.get(String(d.day)), ...d });
      }
    }
    for (const d of steps.values()) {
      log(
        `  ${d.day}: ${Number(d.rows).toLocaleString()} rows, export ${d.exportMs} ms, Parquet ${d.parquetMs} ms, upload ${d.uploadMs} ms, ` +
          `read back and counted ${d.verifyMs} ms, counted in PostgreSQL and dropped ${d.dropMs} ms`,
      );
    }
    const run = { rows: [...perDay.values()].reduce((n, d) => n + d.rows, 0), days: [...perDay.keys()].sort() };
    const archiveRowsPerS = Math.round(run.rows / archiveS);
    // Bytes per point of the simulated day (GPS noise as the simulator makes it); the smooth synthetic day is shown apart.
    const sim = perDay.get(dayOf(d0))!;
    const smooth = perDay.get(dayOf(d1))!;
    const bytesPerPoint = sim.bytes / sim.rows;
    log(
      `archiver: ${run.rows} rows of ${run.days.join(", ")} in ${archiveS.toFixed(1)} s = ${archiveRowsPerS.toLocaleString()} rows/s; ` +
        `simulated day ${bytesPerPoint.toFixed(2)} B/point, smooth synthetic day ${(smooth.bytes / smooth.rows).toFixed(2)} B/point`,
    );

    // 8. DuckDB over a 10M-point archive
    const archiveDir = join(work, "archive");
    t = performance.now();
    const vehiclesPerDay = 12;
    for (let d = 0; d < archiveDaysN; d++) {
      const day = dayOf(d0 - (d + 10) * DAY_MS);
      const folder = join(archiveDir, "positions", `day=${day}`);
      mkdirSync(folder, { recursive: true });
      await conn.run(`
        COPY (SELECT ${FILE_SELECT} FROM (
          SELECT 'veh-' || v AS vehicle_id, '${day}'::TIMESTAMPTZ + to_seconds(i) AS recorded_at, i::BIGINT AS seq, 'fleet-' || (v % 3) AS fleet_id,
                 52.5 + 0.02 * sin(i / 3000.0 + v) + (i % 7) * 1e-6 AS lat, 13.4 + 0.03 * cos(i / 2000.0 + v) AS lon,
                 (CASE WHEN (i // 600) % 5 = 0 THEN 0 ELSE 12 + (i % 10) / 10 END)::FLOAT AS speed, ((i // 50) % 360)::FLOAT AS heading,
                 5::FLOAT AS accuracy, '' AS order_id, 1::SMALLINT AS status, '${day}'::TIMESTAMPTZ + to_seconds(i) + INTERVAL 40 MILLISECOND AS received_at
          FROM range(${vehiclesPerDay}) r(v), range(86400) s(i) ORDER BY vehicle_id, recorded_at))
        TO ${sqlString(join(folder, "part-0.parquet"))} (${PARQUET_OPTIONS})`);
    }
    const archivePoints = archiveDaysN * vehiclesPerDay * 86_400;
    log(
      `wrote a ${archivePoints.toLocaleString()}-point archive (${archiveDaysN} days) in ${((performance.now() - t) / 1000).toFixed(1)} s`,
    );
    const files = [...new Bun.Glob("positions/*/*.parquet").scanSync({ cwd: archiveDir })].map((f) => join(archiveDir, f));
    const askDay = dayOf(d0 - (10 + Math.floor(archiveDaysN / 2)) * DAY_MS);
    const dayMs: number[] = [];
    for (let i = 0; i < 5; i++) {
      const c = await duck.connect();
      const ts = performance.now();
      await c.run(positionsViewSql(files));
      const r = await c.runAndReadAll(
        `SELECT recorded_at, lat, lon, speed FROM positions WHERE vehicle_id = 'veh-${i + 3}' AND day = '${askDay}' ORDER BY recorded_at`,
      );
      dayMs.push(performance.now() - ts);
      if (r.currentRowCount !== 86_400) throw new Error(`vehicle-day query returned ${r.currentRowCount} rows`);
      c.closeSync();
    }
    const vehicleDayMs = [...dayMs].sort((a, b) => a - b)[2]!;
    log(`DuckDB vehicle-day from the archive: ${dayMs.map((x) => x.toFixed(1)).join(", ")} ms (median ${vehicleDayMs.toFixed(1)})`);
    duck.close();

    const figures = {
      history_rows_per_s: historyRowsPerS,
      copy_ceiling_rows_per_s: copyCeiling,
      history_lag_p50_ms: Number(lagP50.toFixed(1)),
      history_lag_p99_ms: Number(lagP99.toFixed(1)),
      lag_offered_points_per_s: offered,
      track_p50_ms: Number(trackP50.toFixed(1)),
      track_p99_ms: Number(trackP99.toFixed(1)),
      track_unpacked_p50_ms: Number(rowsTrack.p50.toFixed(1)),
      track_unpacked_p99_ms: Number(rowsTrack.p99.toFixed(1)),
      parquet_bytes_per_point: Number(bytesPerPoint.toFixed(2)),
      parquet_bytes_per_point_smooth: Number((smooth.bytes / smooth.rows).toFixed(2)),
      archive_rows_per_s: archiveRowsPerS,
      duckdb_vehicle_day_ms: Number(vehicleDayMs.toFixed(1)),
      parquet_duckdb_rows_per_s: duckW.rows_per_s,
      parquet_duckdb_bytes_per_point: Number(duckW.bytes_per_point.toFixed(2)),
      parquet_duckdb_scan_ms: Number(duckW.duckdb_scan_ms.toFixed(1)),
      parquetjs_rows_per_s: pjsW.rows_per_s,
      parquetjs_bytes_per_point: Number(pjsW.bytes_per_point.toFixed(2)),
      parquetjs_scan_ms: Number(pjsW.duckdb_scan_ms.toFixed(1)),
    };
    const ok = (b: boolean) => (b ? "✔" : "✘");
    const rows: [string, string, string][] = [
      [
        "history_rows_per_s",
        historyRowsPerS.toLocaleString(),
        `≥ 70% of COPY (${Math.round((100 * historyRowsPerS) / copyCeiling)}%) ${ok(historyRowsPerS >= TARGETS.ratio * copyCeiling)}`,
      ],
      ["copy_ceiling_rows_per_s", copyCeiling.toLocaleString(), "reference"],
      [
        "history_lag_p99_ms",
        `${lagP99.toFixed(1)} (p50 ${lagP50.toFixed(1)})`,
        `≤ 1000 at ${offered.toLocaleString()}/s ${ok(lagP99 <= TARGETS.lagP99)}`,
      ],
      ["track_p99_ms", `${trackP99.toFixed(1)} (p50 ${trackP50.toFixed(1)})`, `≤ 100 ${ok(trackP99 <= TARGETS.trackP99)}`],
      ["  the same from the rows (no packs)", `${rowsTrack.p99.toFixed(1)} (p50 ${rowsTrack.p50.toFixed(1)})`, "reference"],
      ["parquet_bytes_per_point (simulated day)", bytesPerPoint.toFixed(2), `≤ 10 ${ok(bytesPerPoint <= TARGETS.bytesPerPoint)}`],
      ["  smooth synthetic day", (smooth.bytes / smooth.rows).toFixed(2), "reference"],
      ["archive_rows_per_s", archiveRowsPerS.toLocaleString(), `≥ 500,000 ${ok(archiveRowsPerS >= TARGETS.archiveRowsPerS)}`],
      [
        "duckdb_vehicle_day_ms",
        vehicleDayMs.toFixed(1),
        `≤ 200 (${archivePoints.toLocaleString()} points) ${ok(vehicleDayMs <= TARGETS.vehicleDayMs)}`,
      ],
      [
        "DuckDB writer rows/s, B/pt, scan ms",
        `${duckW.rows_per_s.toLocaleString()}, ${duckW.bytes_per_point.toFixed(2)}, ${duckW.duckdb_scan_ms.toFixed(1)}`,
        "kept",
      ],
      [
        "parquetjs-lite rows/s, B/pt, scan ms",
        `${pjsW.rows_per_s.toLocaleString()}, ${pjsW.bytes_per_point.toFixed(2)}, ${pjsW.duckdb_scan_ms.toFixed(1)}`,
        "compared",
      ],
    ];
    const w0 = Math.max(...rows.map((r) => r[0].length));
    const w1 = Math.max(...rows.map((r) => r[1].length));
    console.log("");
    for (const [a, b, c] of rows) console.log(`${a.padEnd(w0)}  ${b.padStart(w1)}  ${c}`);
    console.log(JSON.stringify(figures));
  } finally {
    await history?.stop("SIGTERM").catch(() => {});
    await nats.close().catch(() => {});
    await sql.end({ timeout: 2 }).catch(() => {});
    await stack.stop();
    rmSync(work, { recursive: true, force: true });
  }
}
