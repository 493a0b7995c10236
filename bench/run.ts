/**
 * `bun run bench <name> [options]`: the project's benchmarks. Each prints progress lines and a
 * table for a person, and last one JSON line for a machine.
 */
import { CODECS_HELP, runCodecsBench } from "./codecs";
import { HISTORY_HELP, runHistoryBench } from "./history";
import { INGEST_HELP, runIngestBench } from "./ingest";
import { PLATFORM_HELP, runPlatformBench } from "./platform";
import { runScaleBench, SCALE_HELP } from "./scale";
import { WATCH_HELP, runWatchBench } from "./watch";
import { WEB_HELP, runWebBench } from "./web";

const BENCHES: Record<string, { summary: string; help: string; run: (argv: string[]) => Promise<unknown> }> = {
  ingest: {
    summary: "gateway points/s, ack latency and memory per stream, next to JetStream and Mosquitto ceilings",
    help: INGEST_HELP,
    run: runIngestBench,
  },
  watch: {
    summary: "tracker points/s into Redis, watch latency next to Redis Pub/Sub, Nearby latency, Redis bytes per vehicle",
    help: WATCH_HELP,
    run: runWatchBench,
  },
  history: {
    summary: "history writer vs COPY, lag, GetTrack, Parquet writers, archiver, DuckDB over a 10M-point archive",
    help: HISTORY_HELP,
    run: runHistoryBench,
  },
  scale: {
    summary:
      "acked points/s and ack p99 at R1 vs R3 (3 nodes), one vs two gateways, trackers and history writers, beside JetStream's R1/R3 ceilings",
    help: SCALE_HELP,
    run: runScaleBench,
  },
  platform: {
    summary:
      "the whole platform under 100,000 vehicles on their own connections: ack, watch, history, Nearby, GetTrack, CPU and memory per service, zero loss, capacity curve, peers",
    help: PLATFORM_HELP,
    run: runPlatformBench,
  },
  web: {
    summary:
      "the dashboard in headless Chromium with 100,000 vehicles in view at 16,700 updates/s: main-thread busy share, frames/s, input delay, heap, bundle",
    help: WEB_HELP,
    run: runWebBench,
  },
  codecs: {
    summary: "each hand protobuf codec next to protobuf-es's BinaryReader/BinaryWriter and reflective fromBinary/toBinary (CPU only)",
    help: CODECS_HELP,
    run: runCodecsBench,
  },
};

const USAGE = `bun run bench <name> [options]   (bun run bench <name> --help for its options)

${Object.entries(BENCHES)
  .map(([name, b]) => `  ${name.padEnd(10)} ${b.summary}`)
  .join("\n")}
`;

const [name, ...rest] = process.argv.slice(2);
if (!name || name === "--help" || name === "-h" || name === "help") {
  process.stdout.write(USAGE);
  process.exit(name ? 0 : 2);
}
const bench = BENCHES[name];
if (!bench) {
  process.stderr.write(`unknown bench "${name}"\n\n${USAGE}`);
  process.exit(2);
}
if (rest.includes("--help") || rest.includes("-h")) {
  process.stdout.write(bench.help);
  process.exit(0);
}
try {
  await bench.run(rest);
  process.exit(0);
} catch (err) {
  // A wrong option is the caller's mistake: the message and the help say enough, a stack does not.
  const usage =
    err instanceof Error && (String((err as { code?: unknown }).code ?? "").startsWith("ERR_PARSE_ARGS") || err.message.startsWith("--"));
  if (usage) process.stderr.write(`bench ${name}: ${(err as Error).message}\n\n${bench.help}`);
  else process.stderr.write(`bench ${name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(usage ? 2 : 1);
}
