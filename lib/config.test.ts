import { describe, expect, test } from "bun:test";
import { ConfigError, loadConfig, parseDuration } from "./config";

describe("config", () => {
  test("config - defaults work without any variable", () => {
    const c = loadConfig({});
    expect(c.gatewayPort).toBe(50051);
    expect(c.duplicateWindow).toBe(5 * 60_000);
    expect(Object.isFrozen(c)).toBe(true);
  });

  test("config - parses durations", () => {
    expect(parseDuration("250ms")).toBe(250);
    expect(parseDuration("30s")).toBe(30_000);
    expect(parseDuration("7d")).toBe(7 * 86_400_000);
    expect(() => parseDuration("soon", "X")).toThrow(ConfigError);
  });

  test("config - a wrong value names the variable", () => {
    expect(() => loadConfig({ GATEWAY_PORT: "70000" })).toThrow(/GATEWAY_PORT/);
    expect(() => loadConfig({ GATEWAY_IDLE_TIMEOUT: "later" })).toThrow(/GATEWAY_IDLE_TIMEOUT/);
    expect(() => loadConfig({ LOG_LEVEL: "loud" })).toThrow(/LOG_LEVEL/);
  });

  test("config - TLS needs both certificate and key", () => {
    expect(() => loadConfig({ GATEWAY_TLS_CERT: "/x.pem" })).toThrow(/together/);
  });
});
