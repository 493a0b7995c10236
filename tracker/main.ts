/**
 * `bun tracker/main.ts`: config from the environment, the tracker, and a clean stop on
 * SIGTERM/SIGINT (open watches end with UNAVAILABLE; unacked batches are redelivered to the next tracker).
 */
import { ConfigError, loadConfig } from "../lib/config";
import { createLogger } from "../lib/log";
import { checkSecret } from "../lib/secret-policy";
import { createTracker } from "./tracker";

let config;
let secretWarning: string | undefined;
try {
  config = loadConfig();
  secretWarning = checkSecret(config);
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`tracker: ${err.message}`);
    process.exit(2);
  }
  throw err;
}
const log = createLogger({ level: config.logLevel, fields: { service: "tracker" } });
if (secretWarning) log.warn(secretWarning);

try {
  const tracker = await createTracker({ config, log });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("stopping", { signal });
    tracker.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error("stop failed", { err });
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
} catch (err) {
  log.error("tracker failed to start", { err });
  process.exit(1);
}
