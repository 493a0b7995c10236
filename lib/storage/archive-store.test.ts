import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createDirStore, localParquetFiles, localPathOf, type ArchiveObject, type ArchiveStore } from "./archive-store";

const dir = mkdtempSync(join(tmpdir(), "archive-store-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("archive store - a key is a local path only when it stays under the root as plain segments", () => {
  const root = join(dir, "root");
  expect(localPathOf(root, "positions/day=2026-11-10/part-0.parquet")).toBe(resolve(root, "positions/day=2026-11-10/part-0.parquet"));
  for (const key of [
    "positions/day=2026-11-10/../../../escape.parquet",
    "../escape.parquet",
    "positions/./day=2026-11-10/part-0.parquet",
    "positions//part-0.parquet",
    "/etc/passwd",
    "positions\\..\\..\\escape.parquet",
    "positions/day=2026-11-10/part-0.parquet\0",
    "..",
  ]) {
    expect(localPathOf(root, key)).toBeUndefined();
  }
});

test("archive store - an S3 key holding ../ is not copied out of the cache folder", async () => {
  // A bucket may hold any key (S3 does; s3rver of the test stack normalizes `..` away when it
  // stores, so the listing is given here as such a bucket would give it).
  const cache = join(dir, "cache", "a", "b");
  // The evil key climbs out of <cache>/<hash>/positions/day=…/: four levels up is <dir>/cache/a.
  const escaped = join(dir, "cache", "a", "escape.parquet");
  const good = "positions/day=2026-11-10/part-0.parquet";
  const evil = "positions/day=2026-11-10/../../../../escape.parquet";
  const bucket: ArchiveStore = {
    kind: "s3",
    root: "s3://hostile/",
    put: async () => 0,
    list: async (prefix): Promise<ArchiveObject[]> => [good, evil].filter((k) => k.startsWith(prefix)).map((key) => ({ key, size: 4 })),
    fetch: async (_key, localFile) => {
      mkdirSync(join(localFile, ".."), { recursive: true });
      writeFileSync(localFile, "PAR1");
    },
    delete: async () => {},
  };
  const files = await localParquetFiles(bucket, cache, ["2026-11-10"]);
  expect(existsSync(escaped)).toBe(false);
  expect(files.length).toBe(1);
  expect(files[0]!.startsWith(resolve(cache))).toBe(true);
  expect(files[0]!.endsWith(good)).toBe(true);
});

test("archive store - a cached copy of the same key and size is fetched again when the object's ETag changed", async () => {
  // Another S3 server's bucket of the same name (each `fleet up` starts its own s3rver): same key, same size, other content.
  const cache = join(dir, "cache-etag");
  const key = "positions/day=2026-10-20/part-0.parquet";
  let object = { etag: '"aaa"', body: "PAR1-run-1" };
  let fetches = 0;
  const bucket: ArchiveStore = {
    kind: "s3",
    root: "s3://fleet/",
    put: async () => 0,
    list: async (): Promise<ArchiveObject[]> => [{ key, size: object.body.length, etag: object.etag }],
    fetch: async (_key, localFile) => {
      fetches++;
      mkdirSync(join(localFile, ".."), { recursive: true });
      writeFileSync(localFile, object.body);
    },
    delete: async () => {},
  };
  const [first] = await localParquetFiles(bucket, cache, ["2026-10-20"]);
  await localParquetFiles(bucket, cache, ["2026-10-20"]);
  expect(fetches).toBe(1);
  object = { etag: '"bbb"', body: "PAR1-run-2" };
  const [second] = await localParquetFiles(bucket, cache, ["2026-10-20"]);
  expect(second).toBe(first!);
  expect(fetches).toBe(2);
  expect(readFileSync(second!, "utf8")).toBe("PAR1-run-2");
});

test("archive store - a local folder refuses to read or delete a key outside it", async () => {
  const root = join(dir, "archive");
  mkdirSync(root, { recursive: true });
  const victim = join(dir, "victim.parquet");
  writeFileSync(victim, "keep me");
  const store = createDirStore(root);
  await expect(store.delete("positions/../../victim.parquet")).rejects.toThrow(/not a plain path/);
  await expect(store.fetch("../victim.parquet", join(dir, "copy.parquet"))).rejects.toThrow(/not a plain path/);
  expect(existsSync(victim)).toBe(true);
  expect(readdirSync(dir)).not.toContain("copy.parquet");
});
