/**
 * Structured logging: one JSON object a line on stderr, so that a person can read it with `jq`
 * and a collector can ship it as is. Levels: debug < info < warn < error.
 */
export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFields = Record<string, unknown>;

const order: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line. */
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  /** Lines below this level are dropped. */
  level?: LogLevel;
  /** Fields on every line, e.g. `{ service: "gateway" }`. */
  fields?: LogFields;
  /** Where lines go; stderr by default. */
  write?: (line: string) => void;
}

function errorFields(value: unknown): unknown {
  if (value instanceof Error) {
    const out: LogFields = { name: value.name, message: value.message };
    if (value.cause !== undefined) out.cause = errorFields(value.cause);
    return out;
  }
  return value;
}

/** Creates a JSON-lines logger. */
export function createLogger({
  level = "info",
  fields = {},
  write = (line) => process.stderr.write(`${line}\n`),
}: LoggerOptions = {}): Logger {
  const min = order[level];
  const emit = (lvl: LogLevel, msg: string, extra?: LogFields) => {
    if (order[lvl] < min) return;
    const line: LogFields = { time: new Date().toISOString(), level: lvl, msg, ...fields };
    if (extra) for (const [k, v] of Object.entries(extra)) line[k] = errorFields(v);
    write(JSON.stringify(line));
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (more) => createLogger({ level, fields: { ...fields, ...more }, write }),
  };
}

/** A logger that writes nothing, for tests and benchmarks that would drown in lines. */
export const silentLogger: Logger = createLogger({ write: () => {} });
