import { expect, test } from "bun:test";
import { Bucket } from "./rate-limit";

test("rate limit - allows the burst, then says when to retry", () => {
  const b = new Bucket(10, 5, 0);
  for (let i = 0; i < 5; i++) expect(b.take(1, 0)).toBe(0);
  expect(b.take(1, 0)).toBe(100);
  expect(b.take(1, 100)).toBe(0);
});

test("rate limit - refills up to the burst only", () => {
  const b = new Bucket(10, 5, 0);
  b.take(5, 0);
  expect(b.take(5, 60_000)).toBe(0);
  expect(b.take(1, 60_000)).toBeGreaterThan(0);
  expect(b.take(6, 60_000)).toBe(Infinity);
});
