/** scripts/patch-postgres.mjs on copies of postgres.js: patches once, says so, and refuses code it does not know. */
import { afterAll, expect, test } from "bun:test";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EDITS } from "../scripts/patch-postgres.mjs";

const root = join(import.meta.dir, "..");
const dir = mkdtempSync(join(tmpdir(), "fleet-patch-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A copy of the installed package with its connection.js as it was released (the patch's edits undone). */
function pristineCopy(name: string): string {
  const to = join(dir, name);
  cpSync(join(root, "node_modules", "postgres"), to, { recursive: true });
  for (const file of ["src/connection.js", "cjs/src/connection.js"]) {
    const path = join(to, file);
    let text = readFileSync(path, "utf8");
    for (const [from, patched] of [...EDITS].reverse()) text = text.replace(patched, from);
    expect(text).not.toContain("fleet patch");
    writeFileSync(path, text);
  }
  return to;
}

const run = (pkg: string) => {
  const r = Bun.spawnSync(["node", join(root, "scripts", "patch-postgres.mjs"), pkg]);
  return { code: r.exitCode, out: r.stdout.toString() + r.stderr.toString() };
};

test("patch-postgres - guards nextWrite, forgets a cancelled write, reads COPY TO data in runs, reports a failed COPY FROM, once, and says so", () => {
  const pkg = pristineCopy("a");
  const first = run(pkg);
  expect(first.code).toBe(0);
  expect(first.out).toContain("patched postgres");
  const text = readFileSync(join(pkg, "src", "connection.js"), "utf8");
  expect(text).toMatch(/function nextWrite\(fn\) \{\n    if \(!socket\) \{ \/\/ fleet patch/);
  expect(text.match(/chunk = nextWriteTimer = null \/\/ fleet patch/g)).toHaveLength(2);
  expect(text).toContain("function copyDataRun()");
  expect(text.match(/copyOut = false \/\/ fleet patch/g)).toHaveLength(4);
  expect(text).toMatch(/function errored\(err\) \{\n    final && \(final\(err\), final = null\) \/\/ fleet patch/);
  // A second run changes nothing and prints nothing.
  const second = run(pkg);
  expect(second.code).toBe(0);
  expect(second.out).toBe("");
  expect(readFileSync(join(pkg, "src", "connection.js"), "utf8")).toBe(text);
});

test("patch-postgres - a release without the code it expects fails the install with what to do", () => {
  const pkg = pristineCopy("b");
  const path = join(pkg, "src", "connection.js");
  writeFileSync(path, readFileSync(path, "utf8").replace("const x = socket.write(chunk, fn)", "const x = socket && socket.write(chunk, fn)"));
  const r = run(pkg);
  expect(r.code).toBe(1);
  expect(r.out).toContain("does not have the code this patch expects");
  expect(r.out).toContain("update scripts/patch-postgres.mjs");
});
