/**
 * Simulator flags (`fleet sim`, `fleet demo`): parsed over the config's defaults (SIM_VEHICLES,
 * SIM_INTERVAL, SIM_BAD_FIX_RATE, SIM_DISCONNECT_RATE, GATEWAY_PORT, FLEET_JWT_SECRET).
 * `fleet sim` (cli/commands/sim.ts) is the one runner.
 */
import { tokenKeys } from "../lib/auth";
import { ConfigError, parseDuration, type Config } from "../lib/config";
import type { SimulatorOptions } from "./simulator";

/** Parses simulator flags over the config's defaults; throws ConfigError naming the flag. */
export function parseSimArgs(argv: readonly string[], config: Config): SimulatorOptions {
  const flags = new Map<string, string>();
  for (let k = 0; k < argv.length; k++) {
    const arg = argv[k]!;
    if (!arg.startsWith("--")) throw new ConfigError(arg, "unexpected argument; flags look like --vehicles 100");
    const eq = arg.indexOf("=");
    if (eq > 0) flags.set(arg.slice(2, eq), arg.slice(eq + 1));
    else if (arg === "--insecure") flags.set("insecure", "true");
    else flags.set(arg.slice(2), argv[++k] ?? "");
  }
  const num = (name: string, def: number, min = 0) => {
    const raw = flags.get(name);
    flags.delete(name);
    if (raw === undefined) return def;
    const v = Number(raw);
    if (!Number.isFinite(v) || v < min) throw new ConfigError(`--${name}`, `expected a number ≥ ${min}, got "${raw}"`);
    return v;
  };
  const dur = (name: string, def: number) => {
    const raw = flags.get(name);
    flags.delete(name);
    return raw === undefined ? def : parseDuration(raw, `--${name}`);
  };
  const str = (name: string, def: string) => {
    const raw = flags.get(name);
    flags.delete(name);
    return raw ?? def;
  };
  const centerRaw = str("center", "52.52,13.405");
  const [lat, lon] = centerRaw.split(",").map(Number);
  if (!Number.isFinite(lat) || !Number.isFinite(lon) || Math.abs(lat!) > 85 || Math.abs(lon!) > 180) {
    throw new ConfigError("--center", `expected "lat,lon", got "${centerRaw}"`);
  }
  const options: SimulatorOptions = {
    url: str("url", `http${config.tlsCert ? "s" : ""}://127.0.0.1:${config.gatewayPort}`),
    keys: tokenKeys(config),
    vehicles: Math.floor(num("vehicles", config.simVehicles, 1)),
    intervalMs: dur("interval", config.simInterval),
    durationMs: dur("duration", 0),
    center: { lat: lat!, lon: lon! },
    badFixRate: num("bad-fix-rate", config.simBadFixes),
    disconnectRate: num("disconnect-rate", config.simDisconnects),
    seed: Math.floor(num("seed", 1)),
    vehiclesPerConnection: Math.floor(num("per-connection", 500, 1)),
    fleets: Math.floor(num("fleets", 3, 1)),
    idPrefix: str("prefix", "veh-"),
    insecure: str("insecure", String(config.tlsInsecure)) === "true",
  };
  const unknown = [...flags.keys()];
  if (unknown.length > 0) throw new ConfigError(`--${unknown[0]}`, "unknown flag");
  return options;
}

/** Usage text of the simulator flags. */
export const SIM_USAGE = `flags (defaults from the config):
  --url URL               gateway (default http://127.0.0.1:$GATEWAY_PORT)
  --vehicles N            vehicles to drive ($SIM_VEHICLES)
  --interval DURATION     report interval per vehicle, e.g. 1s ($SIM_INTERVAL)
  --duration DURATION     stop after this long (default: until Ctrl-C)
  --center LAT,LON        city centre (default 52.52,13.405)
  --bad-fix-rate R        share of deliberately bad fixes ($SIM_BAD_FIX_RATE)
  --disconnect-rate R     chance per report of a dropped stream ($SIM_DISCONNECT_RATE)
  --per-connection N      vehicles per HTTP/2 connection (default 500)
  --fleets N              fleets fleet-1..fleet-N (default 3)
  --prefix P              vehicle id prefix (default veh-)
  --seed N                route seed (default 1)
  --insecure              skip TLS certificate checks`;
