import { expect, test } from "bun:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PositionSchema } from "../gen/fleet/v1/position_pb";
import { copyLines, copyText, timestampMicros } from "./copy-rows";

test("copy rows - escapes backslash, tab and newlines in text", () => {
  expect(copyText("plain")).toBe("plain");
  expect(copyText("a\\b\tc\nd\re")).toBe("a\\\\b\\tc\\nd\\re");
});

test("copy rows - times are exact microseconds", () => {
  expect(timestampMicros({ seconds: 1_700_000_000n, nanos: 123_456_789 } as never)).toBe(1_700_000_000_123_456);
});

test("copy rows - one line per point with its day, none without recorded_at", () => {
  const ms = Date.UTC(2026, 10, 21, 12);
  const p = create(PositionSchema, { vehicleId: "v\t1", seq: 3, recordedAt: timestampFromMs(ms), lat: 52.5, lon: 13.4, speed: 2, fleetId: "f" });
  const bad = create(PositionSchema, { vehicleId: "v2", seq: 1 });
  const { text, rows, days } = copyLines([p, bad]);
  expect(rows).toBe(1);
  expect([...days]).toEqual([Math.floor(ms / 86_400_000)]);
  expect(text).toBe(`v\\t1\t${ms * 1000}\t3\tf\t52.5\t13.4\t2\t0\t0\t\t0\t\\N\n`);
});
