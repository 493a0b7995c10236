import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openDuckDb, sqlString } from "../lib/storage";
import { ParquetType, plainParquet, type PlainColumn } from "./plain-parquet";

const dir = mkdtempSync(join(tmpdir(), "plain-parquet-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const int32s = (xs: number[]) => {
  const b = Buffer.alloc(xs.length * 4);
  xs.forEach((x, i) => {
    b.writeInt32LE(x, i * 4);
  });
  return b;
};
const int64s = (xs: bigint[]) => {
  const b = Buffer.alloc(xs.length * 8);
  xs.forEach((x, i) => {
    b.writeBigInt64LE(x, i * 8);
  });
  return b;
};
const strings = (xs: string[]) => Buffer.concat(xs.flatMap((s) => [int32s([Buffer.byteLength(s)]), Buffer.from(s)]));

async function readBack(file: string, sql: string): Promise<unknown[][]> {
  const duck = await openDuckDb();
  try {
    const c = await duck.connect();
    return (await c.runAndReadAll(sql.replace("$file", sqlString(file)))).getRows();
  } finally {
    duck.close();
  }
}

test("plain parquet - DuckDB reads back every type, nulls in long and short runs, and 20 columns", async () => {
  const rows = 1000;
  const ids = Array.from({ length: rows }, (_, i) => (i % 7 === 0 ? "" : `v-${i}-ü\n"x"`));
  const times = Array.from({ length: rows }, (_, i) => BigInt(i - 500) * 86_400_000_123n); // before and after 1970
  // Nulls: a run of 300 (its RLE header takes two bytes), then every third row.
  const defined = Uint8Array.from({ length: rows }, (_, i) => (i < 300 ? 0 : i % 3 === 0 ? 0 : 1));
  const present = times.filter((_, i) => defined[i] === 1);
  const extra: PlainColumn[] = Array.from({ length: 16 }, (_, k) => ({
    name: `c${k}`,
    type: ParquetType.INT32,
    logical: "none",
    values: int32s(Array.from({ length: rows }, (_, i) => i * (k + 1) - 2 ** 30)),
  }));
  const file = join(dir, "a.parquet");
  const columns: PlainColumn[] = [
    { name: "id", type: ParquetType.BYTE_ARRAY, logical: "string", values: strings(ids) },
    { name: "t", type: ParquetType.INT64, logical: "timestamp_us_utc", values: int64s(times) },
    { name: "status", type: ParquetType.INT32, logical: "int16", values: int32s(Array.from({ length: rows }, (_, i) => (i % 11) - 5)) },
    { name: "maybe", type: ParquetType.INT64, logical: "timestamp_us_utc", values: int64s(present), defined },
    ...extra,
  ];
  await Bun.write(file, Buffer.concat(plainParquet(columns, rows)));

  const types = await readBack(file, "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet($file)) LIMIT 5");
  expect(types).toEqual([
    ["id", "VARCHAR"],
    ["t", "TIMESTAMP WITH TIME ZONE"],
    ["status", "SMALLINT"],
    ["maybe", "TIMESTAMP WITH TIME ZONE"],
    ["c0", "INTEGER"],
  ]);
  const got = await readBack(file, "SELECT id, epoch_us(t), status, epoch_us(maybe), c0, c15 FROM read_parquet($file)");
  expect(got.length).toBe(rows);
  expect(got).toEqual(
    Array.from({ length: rows }, (_, i) => [ids[i], times[i], (i % 11) - 5, defined[i] ? times[i] : null, i - 2 ** 30, i * 16 - 2 ** 30]),
  );
});

test("plain parquet - a table of no rows", async () => {
  const file = join(dir, "empty.parquet");
  await Bun.write(
    file,
    Buffer.concat(
      plainParquet(
        [{ name: "id", type: ParquetType.BYTE_ARRAY, logical: "string", values: Buffer.alloc(0), defined: new Uint8Array(0) }],
        0,
      ),
    ),
  );
  expect(await readBack(file, "SELECT count(*) FROM read_parquet($file)")).toEqual([[0n]]);
});

test("plain parquet - definition levels that do not cover the rows are refused", () => {
  expect(() =>
    plainParquet([{ name: "x", type: ParquetType.INT32, logical: "none", values: int32s([1]), defined: new Uint8Array(2) }], 1),
  ).toThrow("column x has 2 definition levels for 1 rows");
});
