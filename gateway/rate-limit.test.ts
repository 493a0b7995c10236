import { expect, test } from "bun:test";
import { VehicleLimits, type RateLimiterOptions } from "./rate-limit";

const options: RateLimiterOptions = { fixRate: 20, fixBurst: 100, bytesPerSecond: 1000, burstBytes: 500 };

test("rate limit - a backlog sent at once passes when its fixes are spread over recorded time", () => {
  const l = new VehicleLimits(options, 0);
  // 5,000 fixes 100 ms apart and 5,000 more 1 s apart, all read in the same millisecond.
  for (let i = 0; i < 5000; i++) expect(l.takeFix(1_000_000 + i * 100, 0)).toBe(0);
  for (let i = 0; i < 5000; i++) expect(l.takeFix(2_000_000 + i * 1000, 0)).toBe(0);
});

test("rate limit - a flood (1 ms apart) is refused after the burst, with a retry hint of at least 1 s", () => {
  const l = new VehicleLimits(options, 0);
  let taken = 0;
  let wait = 0;
  for (let i = 0; i < 2000 && wait === 0; i++) {
    wait = l.takeFix(1_000_000 + i, 0);
    if (wait === 0) taken++;
  }
  expect(taken).toBeGreaterThanOrEqual(100);
  expect(taken).toBeLessThan(130);
  expect(wait).toBeGreaterThanOrEqual(1000);
  // Wall time refills it at the live rate: after the hint, fixes are taken again.
  expect(l.takeFix(1_000_999, wait)).toBe(0);
});

test("rate limit - going back and forth in recorded time earns nothing", () => {
  const l = new VehicleLimits(options, 0);
  let refused = false;
  for (let i = 0; i < 500 && !refused; i++) refused = l.takeFix(i % 2 === 0 ? 1_000_000 + i : 1_060_000 + i, 0) > 0;
  expect(refused).toBe(true);
});

test("rate limit - a backlog sent after a live point (back in recorded time) still passes", () => {
  const l = new VehicleLimits(options, 0);
  expect(l.takeFix(10_000_000, 0)).toBe(0);
  for (let i = 0; i < 3000; i++) expect(l.takeFix(1_000_000 + i * 1000, 0)).toBe(0);
});

test("rate limit - bytes past the budget ask to stop reading for as long as it takes to refill", () => {
  const l = new VehicleLimits(options, 0);
  expect(l.takeBytes(500, 0)).toBe(0);
  expect(l.takeBytes(250, 0)).toBe(250);
  expect(l.takeBytes(0, 250)).toBe(0);
});
