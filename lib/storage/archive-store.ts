/**
 * The Parquet archive: its Hive layout (`<prefix>positions/day=YYYY-MM-DD/part-<generation>.parquet`)
 * and where it lives, an S3-compatible bucket (Bun's S3 client) or a local folder. The archiver
 * writes it; history (replay of archived days) and `fleet query` read it through DuckDB, which here
 * reads local files only (no httpfs offline), so objects of S3 are copied to a cache folder first.
 */
import { S3Client } from "bun";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { copyFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve, sep } from "node:path";

export interface ArchiveObject {
  /** Key relative to the archive root, e.g. positions/day=2026-11-10/part-0.parquet */
  key: string;
  size: number;
  /** The store's tag of the object's content (S3's ETag), when it gives one. */
  etag?: string;
}

export interface ArchiveStore {
  readonly kind: "s3" | "dir";
  /** Root, e.g. s3://fleet-archive/prefix/ or /var/fleet/archive/ */
  readonly root: string;
  /** Writes a local file under `key`; resolves with its size. */
  put(key: string, localFile: string): Promise<number>;
  /** Objects under a key prefix. */
  list(prefix: string): Promise<ArchiveObject[]>;
  /** Copies an object to a local file. */
  fetch(key: string, localFile: string): Promise<void>;
  delete(key: string): Promise<void>;
}

export const POSITIONS_PREFIX = "positions/";

/** Key prefix of one day: positions/day=YYYY-MM-DD/ */
export function dayPrefix(day: string): string {
  return `${POSITIONS_PREFIX}day=${day}/`;
}

/** Key of one archive generation of a day. */
export function objectKey(day: string, generation: number): string {
  return `${dayPrefix(day)}part-${generation}.parquet`;
}

/** Day of an object key, or undefined. */
export function dayOfKey(key: string): string | undefined {
  return /(?:^|\/)day=(\d{4}-\d{2}-\d{2})\//.exec(key)?.[1];
}

/**
 * The local path of an object key under `root`, or undefined when the key could reach elsewhere: an
 * S3 key is any string (`positions/day=2026-11-10/../../../../home/x.parquet` is one), and a
 * cache path made by joining it would leave the cache folder. Keys the archive writes are plain
 * segments; a key with an empty, `.` or `..` segment, a backslash or a NUL is none of them.
 */
export function localPathOf(root: string, key: string): string | undefined {
  if (key.startsWith("/") || /[\\\0]/.test(key) || key.split("/").some((seg) => seg === "" || seg === "." || seg === ".."))
    return undefined;
  const base = resolve(root);
  const path = resolve(base, key);
  return path.startsWith(base + sep) ? path : undefined;
}

/** localPathOf, or an error naming the key. */
function requireLocalPath(root: string, key: string): string {
  const path = localPathOf(root, key);
  if (path === undefined) throw new Error(`archive key "${key}" is not a plain path under ${root}: refused`);
  return path;
}

export interface S3StoreOptions {
  endpoint: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** Key prefix inside the bucket ("" or ending in "/"). */
  prefix?: string;
}

const normPrefix = (p: string) => (p === "" || p.endsWith("/") ? p : `${p}/`);

/** An archive in an S3-compatible bucket. */
export function createS3Store({ endpoint, bucket, accessKeyId, secretAccessKey, region, prefix = "" }: S3StoreOptions): ArchiveStore {
  const client = new S3Client({ endpoint, bucket, accessKeyId, secretAccessKey, region });
  const pre = normPrefix(prefix);
  return {
    kind: "s3",
    root: `s3://${bucket}/${pre}`,
    async put(key, localFile) {
      const file = Bun.file(localFile);
      await client.write(pre + key, file);
      return file.size;
    },
    async list(keyPrefix) {
      const out: ArchiveObject[] = [];
      let token: string | undefined;
      do {
        const page = await client.list({ prefix: pre + keyPrefix, continuationToken: token, maxKeys: 1000 });
        for (const o of page.contents ?? []) out.push({ key: o.key.slice(pre.length), size: o.size ?? 0, etag: o.eTag });
        token = page.isTruncated ? page.nextContinuationToken : undefined;
      } while (token);
      return out.sort((a, b) => a.key.localeCompare(b.key));
    },
    async fetch(key, localFile) {
      mkdirSync(dirname(localFile), { recursive: true });
      const tmp = `${localFile}.${process.pid}.tmp`;
      await Bun.write(tmp, client.file(pre + key));
      renameSync(tmp, localFile);
    },
    async delete(key) {
      await client.delete(pre + key);
    },
  };
}

/** An archive in a local folder (ARCHIVE_DIR). Writes go through a temporary name and a rename. */
export function createDirStore(dir: string): ArchiveStore {
  const walk = (base: string, rel: string, out: ArchiveObject[]) => {
    const abs = join(base, rel);
    if (!existsSync(abs)) return;
    for (const e of readdirSync(abs, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(base, r, out);
      else if (!e.name.endsWith(".tmp")) out.push({ key: r, size: statSync(join(base, r)).size });
    }
  };
  return {
    kind: "dir",
    root: dir.endsWith("/") ? dir : `${dir}/`,
    async put(key, localFile) {
      const target = requireLocalPath(dir, key);
      mkdirSync(dirname(target), { recursive: true });
      const tmp = `${target}.${process.pid}.tmp`;
      await copyFile(localFile, tmp);
      renameSync(tmp, target);
      return statSync(target).size;
    },
    async list(keyPrefix) {
      const out: ArchiveObject[] = [];
      // Walk from the deepest folder the prefix names.
      const folder = keyPrefix.includes("/") ? keyPrefix.slice(0, keyPrefix.lastIndexOf("/")) : "";
      walk(dir, folder, out);
      return out.filter((o) => o.key.startsWith(keyPrefix)).sort((a, b) => a.key.localeCompare(b.key));
    },
    async fetch(key, localFile) {
      mkdirSync(dirname(localFile), { recursive: true });
      await copyFile(requireLocalPath(dir, key), localFile);
    },
    async delete(key) {
      rmSync(requireLocalPath(dir, key), { force: true });
    },
  };
}

export interface ArchiveSettings {
  archiveDir: string;
  s3Endpoint: string;
  s3Bucket: string;
  s3AccessKeyId: string;
  s3SecretAccessKey: string;
  s3Region: string;
  archivePrefix: string;
}

/** The configured archive: ARCHIVE_DIR when set, else S3 (S3_ENDPOINT). */
export function archiveStoreFrom(c: ArchiveSettings): ArchiveStore {
  if (c.archiveDir) return createDirStore(c.archiveDir);
  if (!c.s3Endpoint)
    throw new Error("no archive: set ARCHIVE_DIR (a local folder) or S3_ENDPOINT (or run `fleet up`, which starts an S3 server)");
  return createS3Store({
    endpoint: c.s3Endpoint,
    bucket: c.s3Bucket,
    accessKeyId: c.s3AccessKeyId,
    secretAccessKey: c.s3SecretAccessKey,
    region: c.s3Region,
    prefix: c.archivePrefix,
  });
}

/** Default cache folder of S3 objects read by DuckDB. */
export function defaultCacheDir(): string {
  return join(tmpdir(), "fleet-archive-cache");
}

/**
 * Local paths of the archive's Parquet files (of `days`, or all), for DuckDB. A local folder is read
 * in place; S3 objects are copied into `cacheDir` once, and a copy is reused while the object has the
 * same size and ETag (kept beside the copy). The ETag is needed: the cache is named by bucket and
 * prefix, and another S3 server's bucket of that name (every `fleet up` starts its own s3rver with
 * bucket "fleet") holds other objects under the same keys, often of the same size, and by size alone
 * a day archived by an earlier run would be read. A key that is no plain path under the cache folder
 * (see localPathOf) is not an object the archiver wrote: it is left out.
 */
export async function localParquetFiles(store: ArchiveStore, cacheDir: string, days?: string[]): Promise<string[]> {
  const objects = days ? (await Promise.all(days.map((d) => store.list(dayPrefix(d))))).flat() : await store.list(POSITIONS_PREFIX);
  const parquet = objects.filter((o) => o.key.endsWith(".parquet"));
  if (store.kind === "dir") return parquet.map((o) => join(store.root, o.key));
  const base = join(cacheDir, Bun.hash(store.root).toString(16));
  const out: string[] = [];
  await Promise.all(
    parquet.map(async (o) => {
      const local = localPathOf(base, o.key);
      if (local === undefined) return;
      const tagFile = `${local}.etag`;
      const fresh =
        existsSync(local) &&
        statSync(local).size === o.size &&
        (o.etag === undefined || (existsSync(tagFile) && readFileSync(tagFile, "utf8") === o.etag));
      if (!fresh) {
        await store.fetch(o.key, local);
        if (o.etag !== undefined) writeFileSync(tagFile, o.etag);
      }
      out.push(local);
    }),
  );
  return out.sort();
}
