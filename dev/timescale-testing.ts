/**
 * Setup shared by the tests that run in either storage mode (plain day partitions or TimescaleDB):
 * the test stack's PostgreSQL, what it offers of TimescaleDB, a `timescaleTest` that runs a case
 * only where the extension is usable and otherwise names the reason in the skipped case's title,
 * and schemas made per case and dropped after the file. Imported by path (it loads bun:test), not
 * through dev/index.ts.
 */
import { afterAll, test } from "bun:test";
import { chooseStorage, connectPostgres, timescaleFacts } from "../lib/storage";
import { testStack } from "./testing";

/** `label` prefixes the file's one line about skipped cases and its schema names. */
export async function timescaleTesting(label: string, schemaPrefix: string, { connections = 2 } = {}) {
  const stack = await testStack(["postgres"]);
  const admin = connectPostgres({ url: stack.databaseUrl, max: connections });
  const facts = await timescaleFacts(admin);
  let usable = false;
  try {
    usable = chooseStorage("auto", facts).mode === "timescale";
  } catch {
    // A server whose extension is created but not preloaded: no case of Timescale mode can run.
  }
  const skipped = facts.installed ? "skipped: TimescaleDB not preloaded" : "skipped: TimescaleDB not installed";
  if (!usable) console.log(`${label}: the TimescaleDB cases are ${skipped} on this server; they run where it is installed and preloaded`);

  let n = 0;
  const schemas: string[] = [];
  afterAll(async () => {
    for (const s of schemas) await admin.unsafe(`DROP SCHEMA IF EXISTS ${s} CASCADE`).catch(() => {});
    await admin.end({ timeout: 1 });
  });
  return {
    stack,
    admin,
    facts,
    usable,
    skipped,
    /** A TimescaleDB case: runs where the extension is usable, else is skipped with the reason in its name. */
    timescaleTest: (name: string, fn: () => Promise<void>, timeout?: number) =>
      test.skipIf(!usable)(usable ? name : `${name} (${skipped})`, fn, timeout),
    /** A schema name of this file, dropped (CASCADE) after its tests. */
    newSchema: () => {
      const s = `${schemaPrefix}_${process.pid}_${Date.now().toString(36)}_${++n}`;
      schemas.push(s);
      return s;
    },
  };
}
