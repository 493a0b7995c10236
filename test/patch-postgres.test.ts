/**
 * patches/postgres+3.4.9.patch: the installed postgres.js has it, and patch-package applies it to the
 * released code once, and fails the install, naming the package, where the code differs.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect, test } from "bun:test";
import { COPY_FAILURE_PATCH_LINE, copyFailuresReported } from "../lib/storage/pg";

const root = join(import.meta.dir, "..");
const PATCH = "postgres+3.4.9.patch";
const dir = mkdtempSync(join(tmpdir(), "fleet-patch-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The lines the patch adds, per file it changes (node_modules/postgres/…). */
function addedLines(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let file = "";
  for (const line of readFileSync(join(root, "patches", PATCH), "utf8").split("\n")) {
    if (line.startsWith("+++ b/")) out.set((file = line.slice(6)), []);
    else if (line.startsWith("+") && file) out.get(file)!.push(line.slice(1));
  }
  return out;
}

/** A project folder with a copy of the installed postgres.js and of patches/. */
function project(): string {
  const at = mkdtempSync(join(dir, "project-"));
  writeFileSync(join(at, "package.json"), JSON.stringify({ name: "patch-test", private: true, dependencies: { postgres: "3.4.9" } }));
  cpSync(join(root, "node_modules", "postgres"), join(at, "node_modules", "postgres"), { recursive: true });
  cpSync(join(root, "patches"), join(at, "patches"), { recursive: true });
  return at;
}

function patchPackage(cwd: string, ...args: string[]): { code: number; out: string } {
  const r = Bun.spawnSync(["node", join(root, "node_modules", "patch-package", "index.js"), ...args], {
    cwd,
    env: { ...process.env, CI: "" },
  });
  return { code: r.exitCode, out: r.stdout.toString() + r.stderr.toString() };
}

test("postgres patch - the installed postgres.js has every line the patch adds, and copyFailuresReported sees it", () => {
  const files = addedLines();
  expect([...files.keys()].sort()).toEqual([
    "node_modules/postgres/cjs/src/connection.js",
    "node_modules/postgres/cjs/src/index.js",
    "node_modules/postgres/src/connection.js",
    "node_modules/postgres/src/index.js",
  ]);
  for (const [file, lines] of files) {
    const text = readFileSync(join(root, file), "utf8");
    const connection = file.endsWith("connection.js");
    expect(lines.length).toBeGreaterThan(connection ? 60 : 15);
    for (const line of lines) expect({ file, has: text.includes(line), line }).toEqual({ file, has: true, line });
    expect(text.match(/fleet patch/g)).toHaveLength(connection ? 18 : 6);
  }
  expect(files.get("node_modules/postgres/src/connection.js")).toContain(COPY_FAILURE_PATCH_LINE);
  expect(copyFailuresReported).toBe(true);
});

test("postgres patch - patch-package applies it to the released code once, and a second run changes nothing", () => {
  const at = project();
  const file = join(at, "node_modules", "postgres", "src", "connection.js");
  expect(patchPackage(at, "--reverse").code).toBe(0);
  const released = readFileSync(file, "utf8");
  expect(released).not.toContain("fleet patch");
  expect(released).toContain("  function nextWrite(fn) {\n    const x = socket.write(chunk, fn)");
  const first = patchPackage(at, "--error-on-fail");
  expect(first).toEqual({ code: 0, out: expect.stringContaining("postgres@3.4.9 ✔") });
  const patched = readFileSync(file, "utf8");
  expect(patched).toContain(COPY_FAILURE_PATCH_LINE);
  expect(patched).toMatch(/function nextWrite\(fn\) \{\n {4}if \(!socket\) \{ \/\/ fleet patch/);
  expect(patchPackage(at, "--error-on-fail").code).toBe(0);
  expect(readFileSync(file, "utf8")).toBe(patched);
});

test("postgres patch - a release without the code it expects fails the install, naming the package and the patch", () => {
  const at = project();
  expect(patchPackage(at, "--reverse").code).toBe(0);
  const file = join(at, "node_modules", "postgres", "src", "connection.js");
  // As if a release had changed nextWrite (the fix of porsager/postgres#1208, say).
  writeFileSync(
    file,
    readFileSync(file, "utf8").replace("    const x = socket.write(chunk, fn)", "    const x = socket && socket.write(chunk, fn)"),
  );
  const r = patchPackage(at, "--error-on-fail");
  expect(r.code).toBe(1);
  expect(r.out).toContain("Failed to apply patch for package postgres");
  expect(r.out).toContain(`patches/${PATCH}`);
});
