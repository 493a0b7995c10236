/**
 * `bun history/main.ts`: config from the environment, the history service (JetStream writer and
 * HistoryService), and a clean stop on SIGTERM/SIGINT (the transaction in flight commits and is acked).
 */
import { ConfigError, loadConfig } from "../lib/config";
import { createLogger } from "../lib/log";
import { checkSecret } from "../lib/secret-policy";
import { guardPostgresClosedSocketWrite } from "../lib/storage";
import { createHistory } from "./history";

let config;
let secretWarning: string | undefined;
try {
  config = loadConfig();
  secretWarning = checkSecret(config);
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`history: ${err.message}`);
    process.exit(2);
  }
  throw err;
}
const log = createLogger({ level: config.logLevel, fields: { service: "history" } });
if (secretWarning) log.warn(secretWarning);
guardPostgresClosedSocketWrite((err) => log.warn("postgres.js wrote to a closed connection (known bug): ignored, its queries are retried", { err }));

try {
  const history = await createHistory({ config, log });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("stopping", { signal });
    history.close().then(
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
  log.error("history failed to start", { err });
  process.exit(1);
}
