/**
 * `bun gateway/main.ts`: config from the environment, the gateway, and a graceful drain on
 * SIGTERM/SIGINT (exit 0 once in-flight points are acked, or the drain timeout passed).
 */
import { ConfigError, loadConfig } from "../lib/config";
import { createLogger } from "../lib/log";
import { checkSecret } from "../lib/secret-policy";
import { createGateway } from "./gateway";

let config;
let secretWarning: string | undefined;
try {
  config = loadConfig();
  secretWarning = checkSecret(config, { tls: config.tlsCert !== "" });
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`gateway: ${err.message}`);
    process.exit(2);
  }
  throw err;
}
const log = createLogger({ level: config.logLevel, fields: { service: "gateway" } });
if (secretWarning) log.warn(secretWarning);

try {
  const gateway = await createGateway({ config, log });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("stopping", { signal });
    gateway.drain().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error("drain failed", { err });
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
} catch (err) {
  log.error("gateway failed to start", { err });
  process.exit(1);
}
