/** `fleet sim`: simulated vehicles against a running gateway, with progress lines. */
import { loadConfig } from "../../lib/config";
import { createLogger } from "../../lib/log";
import { parseSimArgs, SIM_USAGE } from "../../sim/options";
import { createSimulator, type SimulatorStats } from "../../sim/simulator";
import { untilSignal } from "../platform";

const help = `usage: fleet sim [flags]

Drives simulated vehicles on a street grid (plausible speeds, turns, stops, GPS jitter, a few bad
fixes, occasional dropped streams) against a running gateway, using the vehicle client library.
Prints counts every 5 s; Ctrl-C stops and flushes what is buffered.

${SIM_USAGE}`;

/** One human line of simulator counts. */
export function describeSimStats(s: SimulatorStats): string {
  const rejected = Object.entries(s.rejected)
    .map(([k, v]) => `${k.toLowerCase()} ${v}`)
    .join(", ");
  const rate = s.elapsedMs > 0 ? Math.round((s.acked * 1000) / s.elapsedMs) : 0;
  return (
    `vehicles ${s.connected}/${s.vehicles} connected · sent ${s.sent} · acked ${s.acked} (${rate}/s) · ` +
    `refused ${rejected || "0"} · buffered ${s.buffered} · reconnects ${s.reconnects}` +
    (s.failed ? ` · FAILED ${s.failed}` : "")
  );
}

export async function run(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(help);
    return 0;
  }
  const config = loadConfig();
  const options = parseSimArgs(argv, config);
  const log = createLogger({ level: "warn", fields: { service: "sim" } });
  const sim = createSimulator({ ...options, log });
  console.error(`fleet sim: ${options.vehicles} vehicles reporting every ${options.intervalMs} ms to ${options.url}`);
  await sim.start();
  const timer = setInterval(() => console.log(`fleet sim: ${describeSimStats(sim.stats())}`), 5000);
  const stopped = await Promise.race([sim.done.then(() => "done" as const), untilSignal()]);
  clearInterval(timer);
  if (stopped !== "done") {
    console.error("fleet sim: stopping, flushing buffered points…");
    await sim.stop();
  }
  const final = sim.stats();
  console.log(`fleet sim: final: ${describeSimStats(final)}`);
  return final.failed > 0 ? 1 : 0;
}
