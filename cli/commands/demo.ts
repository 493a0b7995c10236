/** `fleet demo`: `fleet up` plus simulated vehicles, printing live counts. */
import { parseArgs } from "node:util";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { tokenKeys } from "../../lib/auth";
import { loadConfig, parseDuration } from "../../lib/config";
import { createLogger } from "../../lib/log";
import { POSITIONS_STREAM } from "../../lib/subjects";
import { createSimulator } from "../../sim/simulator";
import { startPlatform, untilSignal } from "../platform";
import { describeSimStats } from "./sim";
import { describeEndpoints } from "./up";

const help = `usage: fleet demo [--vehicles N] [--interval 1s] [--duration D]

Starts the whole platform like "fleet up", then drives simulated vehicles (default: SIM_VEHICLES=50,
one report a second each) and prints every 5 s what the vehicles sent, what the gateway acked and
how many positions JetStream holds. Ctrl-C (or --duration) stops everything.`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      help: { type: "boolean", short: "h" },
      vehicles: { type: "string" },
      interval: { type: "string" },
      duration: { type: "string" },
    },
  });
  if (values.help) {
    console.log(help);
    return 0;
  }
  const config = loadConfig();
  const vehicles = values.vehicles ? Number(values.vehicles) : config.simVehicles;
  if (!Number.isInteger(vehicles) || vehicles < 1) throw new Error(`--vehicles: expected a whole number ≥ 1, got "${values.vehicles}"`);
  const intervalMs = values.interval ? parseDuration(values.interval, "--interval") : config.simInterval;
  const durationMs = values.duration ? parseDuration(values.duration, "--duration") : 0;

  const say = (line: string) => console.log(`fleet demo: ${line}`);
  const platform = await startPlatform({ config, progress: say });
  say(`the platform is up:\n${describeEndpoints(platform.endpoints)}`);
  say(`service logs: ${platform.logDir}`);

  const nc = await connect({ servers: platform.endpoints.nats, name: "fleet-demo" });
  const jsm = await jetstreamManager(nc);
  const sim = createSimulator({
    url: platform.endpoints.gateway!,
    keys: tokenKeys(config),
    vehicles,
    intervalMs,
    durationMs,
    badFixRate: config.simBadFixes,
    disconnectRate: config.simDisconnects,
    log: createLogger({ level: "warn", fields: { service: "sim" } }),
  });
  say(
    `driving ${vehicles} simulated vehicles, one report every ${intervalMs} ms each${durationMs ? ` for ${durationMs / 1000} s` : ""}; ` +
      "acks arrive as each vehicle's Upload stream rolls (every 5 s or 500 points); Ctrl-C stops",
  );
  await sim.start();
  const report = async () => {
    let stored = "?";
    try {
      const info = await jsm.streams.info(POSITIONS_STREAM);
      stored = `${info.state.messages} messages, ${info.state.bytes} bytes`;
    } catch {
      stored = "unavailable";
    }
    say(`${describeSimStats(sim.stats())} · JetStream ${POSITIONS_STREAM}: ${stored}`);
  };
  const timer = setInterval(() => void report(), 5000);
  const stopped = await Promise.race([sim.done.then(() => "done" as const), untilSignal()]);
  clearInterval(timer);
  say(stopped === "done" ? "duration reached, stopping" : `${stopped}: stopping`);
  await sim.stop();
  await report();
  await nc.close();
  await platform.stop();
  say("stopped; everything the demo started is gone");
  return 0;
}
