import { expect, test } from "bun:test";
import { addHistograms, bucketBound, histogramDelta, loopDelayLine, readHistogram } from "./prom-histogram";

const scrape = (a: number, b: number, inf: number, sum: number) => `# HELP x_seconds time
# TYPE x_seconds histogram
x_seconds_bucket{le="0.1"} ${a}
x_seconds_bucket{le="0.5"} ${b}
x_seconds_bucket{le="+Inf"} ${inf}
x_seconds_sum ${sum}
x_seconds_count ${inf}
other_bucket{le="0.1"} 99
`;

test("prom histogram - reads buckets, count and sum of one name; the change between two readings; the bucket of a quantile", () => {
  const before = readHistogram(scrape(5, 9, 10, 2), "x_seconds");
  expect(before).toEqual({
    buckets: [
      [0.1, 5],
      [0.5, 9],
      [Infinity, 10],
    ],
    count: 10,
    sum: 2,
  });
  const after = readHistogram(scrape(5, 107, 110, 40), "x_seconds");
  const d = histogramDelta(before, after);
  expect(d).toEqual({
    buckets: [
      [0.1, 0],
      [0.5, 98],
      [Infinity, 100],
    ],
    count: 100,
    sum: 38,
  });
  expect(bucketBound(d, 0.5)).toBe(0.5);
  expect(bucketBound(d, 0.99)).toBe(Infinity);
  expect(bucketBound(d, 0.98)).toBe(0.5);
  expect(bucketBound(readHistogram("", "x_seconds"), 0.5)).toBeNaN();
});

test("prom histogram - the event-loop delay of a registry's process metrics counts a blocked loop", async () => {
  const { createRegistry } = await import("../lib/metrics");
  const registry = createRegistry("probe");
  const before = await registry.metrics();
  await Bun.sleep(50);
  const until = performance.now() + 60;
  while (performance.now() < until) {
    // the event loop is busy: the 10 ms sampling timer comes late
  }
  await Bun.sleep(30);
  const line = loopDelayLine(before, await registry.metrics());
  expect(line).toMatch(/> 20 ms [1-9]\d* \(of \d+ samples/);
  expect(loopDelayLine(before, before)).toBe("no event-loop samples");
});

test("prom histogram - the same histogram of several processes added: buckets by bound, counts and sums", () => {
  const a = readHistogram(scrape(5, 9, 10, 2), "x_seconds");
  const b = readHistogram(scrape(1, 1, 90, 30), "x_seconds");
  const both = addHistograms([a, b]);
  expect(both).toEqual({
    buckets: [
      [0.1, 6],
      [0.5, 10],
      [Infinity, 100],
    ],
    count: 100,
    sum: 32,
  });
  expect(bucketBound(both, 0.5)).toBe(Infinity);
  expect(bucketBound(both, 0.1)).toBe(0.5);
});
