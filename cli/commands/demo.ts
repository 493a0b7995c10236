/** `fleet demo`: `fleet up` plus simulated vehicles, printing live counts. */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { loadConfig } from "../../lib/config";
import { createLogger } from "../../lib/log";
import { natsServers, POSITIONS_STREAM } from "../../lib/nats";
import { parseSimArgs, SIM_USAGE } from "../../sim/options";
import { cityBox, createCity } from "../../sim/route";
import { createSimulator } from "../../sim/simulator";
import { startPlatform, untilSignal } from "../platform";
import { describeSimStats } from "./sim";
import { describeEndpoints, describeMap } from "./up";

const help = `usage: fleet demo [flags]

Starts the whole platform like "fleet up", then drives simulated vehicles against its gateway and
prints every 5 s what the vehicles sent, what the gateway acked and how many positions JetStream
holds. Ctrl-C (or --duration) stops everything. Takes the simulator's flags (--url excepted):

${SIM_USAGE}`;

export async function run(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(help);
    return 0;
  }
  if (argv.some((a) => a === "--url" || a.startsWith("--url="))) throw new Error("--url: the demo drives its own gateway");
  const config = loadConfig();
  const options = parseSimArgs(argv, config);
  const { vehicles, intervalMs, durationMs } = options;

  const say = (line: string) => console.log(`fleet demo: ${line}`);
  const platform = await startPlatform({ config, progress: say });
  say(`the platform is up:\n${describeEndpoints(platform.endpoints)}`);
  say(`service logs: ${platform.logDir}`);
  say(describeMap(mapWithBox(platform.mapUrl, options.center)));

  const nc = await connect({ servers: natsServers(platform.endpoints.nats), name: "fleet-demo" });
  const jsm = await jetstreamManager(nc);
  const sim = createSimulator({
    ...options,
    url: platform.endpoints.gateway!,
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

/** The page defaults to the default city's box; the demo names the box it drives in, as --center may move it. */
function mapWithBox(mapUrl: string | null, center: { lat: number; lon: number } | undefined): string | null {
  if (!mapUrl || !center) return mapUrl;
  const b = cityBox(createCity({ center }), 500);
  const box = [b.minLat, b.minLon, b.maxLat, b.maxLon].map((v) => v.toFixed(4)).join(",");
  const hash = mapUrl.indexOf("#");
  return `${mapUrl.slice(0, hash)}?box=${box}${mapUrl.slice(hash)}`;
}
