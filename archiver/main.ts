/**
 * `bun archiver/main.ts`: config from the environment, the archiver (a run every ARCHIVE_INTERVAL and
 * ArchiveService), and a stop on SIGTERM/SIGINT (a run cut short is finished by the next one).
 */
import { ConfigError, loadConfig } from "../lib/config";
import { createLogger } from "../lib/log";
import { checkSecret } from "../lib/secret-policy";
import { guardPostgresClosedSocketWrite } from "../lib/storage";
import { createArchiver } from "./archiver";

let config;
let secretWarning: string | undefined;
try {
  config = loadConfig();
  secretWarning = checkSecret(config);
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`archiver: ${err.message}`);
    process.exit(2);
  }
  throw err;
}
const log = createLogger({ level: config.logLevel, fields: { service: "archiver" } });
if (secretWarning) log.warn(secretWarning);
guardPostgresClosedSocketWrite((err) => log.warn("postgres.js wrote to a closed connection (known bug): ignored, its queries are retried", { err }));

try {
  const archiver = await createArchiver({ config, log });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("stopping", { signal });
    archiver.close().then(
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
  log.error("archiver failed to start", { err });
  process.exit(1);
}
