/**
 * What every service's main.ts does, once: config from the environment (a wrong value exits 2
 * naming the variable), the secret policy, a JSON logger, the service started (a failure exits 1),
 * and one stop on the first SIGTERM or SIGINT (exit 0 once it finished, 1 if it failed).
 */
import { ConfigError, loadConfig, type Config } from "./config";
import { createLogger, type Logger } from "./log";
import { checkSecret } from "./secret-policy";

export interface RunServiceOptions<S> {
  /** The service's name: in its log lines and its config errors. */
  name: string;
  start(deps: { config: Config; log: Logger }): Promise<S>;
  /** The graceful stop the signals run. */
  stop(service: S): Promise<unknown>;
  /** How the stop is named when it fails ("drain failed", "stop failed"). */
  stopName?: string;
  /** Whether the service's own port serves TLS (the secret policy is laxer then). */
  tls?(config: Config): boolean;
  /** Runs once the logger exists, before the service starts. */
  prepare?(log: Logger): void;
}

/** Runs a service as a process: see the file's comment. */
export async function runService<S>({ name, start, stop, stopName = "stop", tls, prepare }: RunServiceOptions<S>): Promise<void> {
  let config: Config;
  let secretWarning: string | undefined;
  try {
    config = loadConfig();
    secretWarning = tls ? checkSecret(config, { tls: tls(config) }) : checkSecret(config);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`${name}: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger({ level: config.logLevel, fields: { service: name } });
  if (secretWarning) log.warn(secretWarning);
  prepare?.(log);

  try {
    const service = await start({ config, log });
    let stopping = false;
    const onSignal = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info("stopping", { signal });
      stop(service).then(
        () => process.exit(0),
        (err: unknown) => {
          log.error(`${stopName} failed`, { err });
          process.exit(1);
        },
      );
    };
    process.on("SIGTERM", () => onSignal("SIGTERM"));
    process.on("SIGINT", () => onSignal("SIGINT"));
  } catch (err) {
    log.error(`${name} failed to start`, { err });
    process.exit(1);
  }
}
