import { afterAll, beforeAll, expect, test } from "bun:test";
import { createGateway, type Gateway } from "../gateway/gateway";
import { loadConfig } from "../lib/config";
import { silentLogger } from "../lib/log";
import { testStack } from "../dev";
import { parseSimArgs } from "./options";
import { createSimulator } from "./simulator";

const keys = { secret: "sim-test-secret", issuer: "fleet", audience: "fleet" };
const run = Date.now().toString(36);
let gateway: Gateway;

beforeAll(async () => {
  const stack = await testStack(["nats"]);
  gateway = await createGateway({
    config: loadConfig({}, { secret: keys.secret, gatewayPort: 0, logLevel: "error" }),
    natsUrl: stack.natsUrl,
    log: silentLogger,
    stream: `SIM_TEST_${run.toUpperCase()}`,
    subjectPrefix: `simtest.${run}.`,
  });
}, 60_000);

afterAll(async () => {
  await gateway?.close();
});

test("simulator - drives vehicles through the gateway; bad fixes are refused with their reason", async () => {
  const sim = createSimulator({
    url: gateway.url,
    keys,
    vehicles: 40,
    intervalMs: 50,
    durationMs: 2_500,
    badFixRate: 0.05,
    disconnectRate: 0.01,
    vehiclesPerConnection: 15,
    idPrefix: `sim-${run}-`,
    client: { rollEvery: { points: 20, ms: 500 }, backoff: { initialMs: 20, maxMs: 200 } },
  });
  await sim.start();
  await sim.done;
  const s = sim.stats();
  expect(s.vehicles).toBe(40);
  expect(s.sent).toBeGreaterThan(40 * 30);
  expect(s.buffered).toBe(0);
  expect(s.failed).toBe(0);
  expect(s.disconnects).toBeGreaterThan(0);
  // A disconnect between two streams has nothing to break, so not every one costs a reconnect.
  expect(s.reconnects).toBeGreaterThan(0);
  const refused = Object.values(s.rejected).reduce((a, b) => a + b, 0);
  // Bad fixes are refused and nothing else is. A refusal whose ack was lost to a disconnect is
  // covered by the durable seq Resume gives, so the client cannot tell it from an ack: <=, not ==.
  expect(refused).toBeLessThanOrEqual(s.badFixes);
  expect(refused).toBeGreaterThanOrEqual(s.badFixes * 0.7);
  expect(Object.keys(s.rejected).sort()).toEqual(["INVALID_COORDINATES", "TIME_IN_FUTURE"]);
  expect(s.acked + refused).toBe(s.sent);
}, 30_000);

test("simulator - CLI flags override the config defaults and unknown flags are refused", () => {
  const config = loadConfig({ SIM_VEHICLES: "7", GATEWAY_PORT: "6000" });
  const o = parseSimArgs(["--interval", "250ms", "--center=40.7,-74", "--duration", "1m"], config);
  expect(o).toMatchObject({
    url: "http://127.0.0.1:6000",
    vehicles: 7,
    intervalMs: 250,
    durationMs: 60_000,
    center: { lat: 40.7, lon: -74 },
  });
  expect(() => parseSimArgs(["--vehicels", "3"], config)).toThrow("--vehicels: unknown flag");
  expect(() => parseSimArgs(["--center", "x"], config)).toThrow("--center");
});
