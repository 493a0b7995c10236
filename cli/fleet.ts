#!/usr/bin/env bun
/**
 * `fleet`: the platform's command line. Wiring only: each command lives in its own file
 * under cli/commands and is loaded when called.
 */
import { ConfigError } from "../lib/config";

const commands: Record<string, { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number> }> }> = {
  up: { summary: "start the stack and all services in the foreground", load: () => import("./commands/up") },
  demo: { summary: "start everything plus simulated vehicles and print live counts", load: () => import("./commands/demo") },
  sim: { summary: "drive simulated vehicles against a running gateway", load: () => import("./commands/sim") },
  token: { summary: "mint vehicle and watch tokens for the configured secret", load: () => import("./commands/token") },
  query: { summary: "run SQL with DuckDB over the Parquet archive (a positions view is defined)", load: () => import("./commands/query") },
  compress: { summary: "compress the TimescaleDB chunks the compression policy left behind", load: () => import("./commands/compress") },
  status: {
    summary: "the cluster at a glance: NATS nodes, stream, consumers, services, Redis, PostgreSQL",
    load: () => import("./commands/status"),
  },
};

const usage = `fleet: fleet telemetry platform (gRPC ingest -> NATS JetStream -> Redis / PostgreSQL / Parquet)

usage: fleet <command> [options]

commands:
${Object.entries(commands)
  .map(([name, c]) => `  ${name.padEnd(8)} ${c.summary}`)
  .join("\n")}

Run "fleet <command> --help" for a command's options, "fleet env" for every environment variable.`;

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(usage);
    return 0;
  }
  if (name === "env") {
    const { configHelp } = await import("../lib/config");
    console.log(`Environment variables (all optional; defaults work locally):\n${configHelp()}`);
    return 0;
  }
  const command = commands[name];
  if (!command) {
    console.error(`fleet: unknown command "${name}"\n\n${usage}`);
    return 2;
  }
  return (await command.load()).run(rest);
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`fleet: configuration error: ${err.message}`);
    process.exitCode = 2;
  } else if (err instanceof Error && (err as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
    console.error(`fleet: ${err.message} (see --help)`);
    process.exitCode = 2;
  } else {
    console.error(`fleet: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  }
}
