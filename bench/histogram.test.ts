import { expect, test } from "bun:test";
import { createHistogram } from "./histogram";

test("histogram - quantiles within one bucket of the exact value, fine and coarse range", () => {
  const h = createHistogram();
  for (let i = 1; i <= 1000; i++) h.record(i * 0.05); // 0.05 .. 50 ms
  expect(h.quantile(0.5)).toBeCloseTo(25, 1);
  expect(h.quantile(0.99)).toBeCloseTo(49.5, 1);
  const slow = createHistogram();
  for (let i = 1; i <= 100; i++) slow.record(i * 100); // 100 ms .. 10 s
  expect(Math.abs(slow.quantile(0.5) - 5000)).toBeLessThanOrEqual(1);
  expect(slow.max).toBe(10_000);
});

test("histogram - merges the sparse form of another", () => {
  const a = createHistogram();
  const b = createHistogram();
  a.record(1);
  b.record(3);
  b.record(70_000); // overflow: reported as the max
  a.merge(b.toJSON());
  expect(a.count).toBe(3);
  expect(a.quantile(0.5)).toBeCloseTo(3, 1);
  expect(a.quantile(1)).toBe(70_000);
});
