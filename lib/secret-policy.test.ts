import { expect, test } from "bun:test";
import { join } from "node:path";
import { ConfigError, loadConfig } from "./config";
import { checkSecret, isLoopback } from "./secret-policy";
import { startServiceProcess } from "../dev";

const strong = "s".repeat(32);

test("secret policy - loopback addresses are told from the rest", () => {
  for (const h of ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]", "::ffff:127.0.0.1"]) expect(isLoopback(h)).toBe(true);
  for (const h of ["0.0.0.0", "::", "10.0.0.5", "fleet.example", "128.0.0.1"]) expect(isLoopback(h)).toBe(false);
});

test("secret policy - beyond loopback or over TLS, the development secret and a short one are refused naming the variable", () => {
  const dev = loadConfig({});
  for (const [config, tls] of [
    [{ ...dev, host: "0.0.0.0" }, false],
    [dev, true],
  ] as const) {
    const err = (() => {
      try {
        checkSecret(config, { tls });
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).variable).toBe("FLEET_JWT_SECRET");
    expect((err as Error).message).toContain("built-in development secret");
    expect((err as Error).message).toContain("set FLEET_JWT_SECRET to a random secret of at least 32 bytes");
  }
  expect(() => checkSecret({ host: "0.0.0.0", secret: "s".repeat(31) })).toThrow("is 31 bytes long, shorter than 32");
  expect(checkSecret({ host: "0.0.0.0", secret: strong }, { tls: true })).toBeUndefined();
});

test("secret policy - on loopback the development secret starts with a warning saying what to set", () => {
  expect(checkSecret(loadConfig({}))).toContain("FLEET_JWT_SECRET is the built-in development secret");
  expect(checkSecret({ host: "127.0.0.1", secret: "short" })).toContain("shorter than 32");
  expect(checkSecret({ host: "127.0.0.1", secret: strong })).toBeUndefined();
});

test("secret policy - each service process refuses to start beyond loopback on the development secret", async () => {
  const root = join(import.meta.dir, "..");
  for (const service of ["gateway", "tracker", "history", "archiver"]) {
    const err = await startServiceProcess({
      service,
      env: {
        FLEET_HOST: "0.0.0.0",
        FLEET_JWT_SECRET: "fleet-local-development-secret-change-me",
        NATS_URL: "nats://127.0.0.1:1",
        REDIS_URL: "redis://127.0.0.1:1",
        DATABASE_URL: "postgres://127.0.0.1:1/x",
      },
      root,
      readyTimeoutMs: 10_000,
    }).then(
      (p) => p.stop("SIGKILL").then(() => new Error(`${service} started`)),
      (e: unknown) => e as Error,
    );
    expect(err.message).toContain(`${service} exited (2) before it was ready`);
    expect(err.message).toContain(`${service}: FLEET_JWT_SECRET: is the built-in development secret`);
  }
});
