/** `fleet query` from a separate process over a local archive folder: results, and SQL errors shown plainly. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { csvToParquet } from "../archiver/parquet-writer";
import { openDuckDb } from "../lib/storage";

const root = join(import.meta.dir, "..");
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "fleet-query-"));
  const duck = await openDuckDb();
  const conn = await duck.connect();
  for (const [day, n] of [
    ["2026-10-01", 3],
    ["2026-10-02", 2],
  ] as const) {
    const csv = join(dir, "x.csv");
    const lines = Array.from(
      { length: n },
      (_, i) => `truck-${i},${day} 08:00:0${i}+00,${i + 1},north,525000001,134000000,850,9000,500,"",1,`,
    );
    writeFileSync(csv, `${lines.join("\n")}\n`);
    mkdirSync(join(dir, "positions", `day=${day}`), { recursive: true });
    await csvToParquet(conn, csv, join(dir, "positions", `day=${day}`, "part-0.parquet"));
  }
  duck.close();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const fleet = (...args: string[]) => {
  const r = Bun.spawnSync([process.execPath, join(root, "cli", "fleet.ts"), "query", ...args], {
    env: { ...process.env, ARCHIVE_DIR: dir },
  });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
};

test("fleet query - SQL over the positions view, as JSON lines", () => {
  const r = fleet("SELECT day::VARCHAR AS day, count(*) AS n, max(lat) AS lat FROM positions GROUP BY day ORDER BY day", "--json");
  expect(r.code).toBe(0);
  expect(
    r.out
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l)),
  ).toEqual([
    { day: "2026-10-01", n: 3, lat: 52.5000001 },
    { day: "2026-10-02", n: 2, lat: 52.5000001 },
  ]);
});

test("fleet query - an empty order in files of the CSV export (NULL there) reads as '', as PostgreSQL had it", () => {
  const r = fleet("SELECT count(*) AS n FROM positions WHERE order_id = '' AND order_id IS NOT NULL", "--json");
  expect(r.code).toBe(0);
  expect(JSON.parse(r.out.trim())).toEqual({ n: 5 });
});

test("fleet query - a table for a person", () => {
  const r = fleet("SELECT vehicle_id, fleet_id FROM positions WHERE day = '2026-10-02' ORDER BY vehicle_id");
  expect(r.code).toBe(0);
  expect(r.out).toContain("vehicle_id | fleet_id");
  expect(r.out).toContain("truck-1    | north");
});

test("fleet query - a SQL error is shown plainly, exit 1", () => {
  const r = fleet("SELEC count(*) FROM positions");
  expect(r.code).toBe(1);
  expect(r.err).toContain('fleet query: Parser Error: syntax error at or near "SELEC"');
  expect(r.err).not.toContain("    at ");
  const missing = fleet("SELECT nope FROM positions");
  expect(missing.code).toBe(1);
  expect(missing.err).toContain("nope");
});
