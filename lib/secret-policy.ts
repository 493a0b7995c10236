/**
 * Whether a service may start with the token secret it was given. Tokens are HS256: whoever knows
 * the secret mints any token, admin included. The built-in development secret is public (it is in
 * this repository), so a service reachable from other machines, or serving TLS (which only makes
 * sense for them), refuses to start on it or on a secret too short to resist guessing; on loopback
 * it starts and says once what to set before going further.
 */
import { ConfigError, usesDevSecret, type Config } from "./config";

/** Shortest secret a reachable service accepts: 256 bits, as RFC 7518 asks of an HS256 key. */
export const MIN_SECRET_BYTES = 32;

/** True for addresses only this machine reaches: localhost, 127.0.0.0/8, ::1 (and ::ffff:127.x). */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, "");
  return h === "localhost" || h === "::1" || /^(::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/**
 * Throws a ConfigError naming FLEET_JWT_SECRET when `config` would serve beyond loopback (or over
 * TLS) with the development secret or a secret shorter than MIN_SECRET_BYTES; returns the warning
 * to log once at start when it would do so on loopback, or undefined when the secret is fine.
 */
export function checkSecret(config: Pick<Config, "secret" | "host">, { tls = false }: { tls?: boolean } = {}): string | undefined {
  const dev = usesDevSecret(config as Config);
  const bytes = Buffer.byteLength(config.secret);
  if (!dev && bytes >= MIN_SECRET_BYTES) return undefined;
  const problem = dev
    ? "is the built-in development secret, with which anyone can mint any token (admin included)"
    : `is ${bytes} bytes long, shorter than ${MIN_SECRET_BYTES}`;
  const fix = `set FLEET_JWT_SECRET to a random secret of at least ${MIN_SECRET_BYTES} bytes (e.g. \`openssl rand -base64 48\`) in every service and in \`fleet token\``;
  const exposed = !isLoopback(config.host)
    ? `this service listens on ${config.host}, beyond loopback`
    : tls
      ? "this service serves TLS"
      : undefined;
  if (exposed) throw new ConfigError("FLEET_JWT_SECRET", `${problem}, and ${exposed}: ${fix}`);
  return `FLEET_JWT_SECRET ${problem}: fine on loopback (${config.host}); before listening beyond it, ${fix}`;
}
