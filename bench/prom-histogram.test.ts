import { expect, test } from "bun:test";
import { bucketBound, histogramDelta, readHistogram } from "./prom-histogram";

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
  expect(before).toEqual({ buckets: [[0.1, 5], [0.5, 9], [Infinity, 10]], count: 10, sum: 2 });
  const after = readHistogram(scrape(5, 107, 110, 40), "x_seconds");
  const d = histogramDelta(before, after);
  expect(d).toEqual({ buckets: [[0.1, 0], [0.5, 98], [Infinity, 100]], count: 100, sum: 38 });
  expect(bucketBound(d, 0.5)).toBe(0.5);
  expect(bucketBound(d, 0.99)).toBe(Infinity);
  expect(bucketBound(d, 0.98)).toBe(0.5);
  expect(bucketBound(readHistogram("", "x_seconds"), 0.5)).toBeNaN();
});
