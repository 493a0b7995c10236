/**
 * No two files of the repo import each other, directly or round a longer circle: a circle makes the
 * order modules run in depend on which one is imported first (a constant read before it is set),
 * and means the two are one piece in two files. Relative imports only, `import type` included.
 */
import { expect, test } from "bun:test";
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { Glob } from "bun";

const root = resolve(import.meta.dir, "..");
const IMPORT = /(?:import|export)\s[^'"`;]*?from\s*["'](\.{1,2}\/[^"']+)["']|import\s*\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g;

/** Each .ts file's relative imports, as repo paths. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of new Glob("**/*.ts").scanSync({ cwd: root })) {
    if (file.split("/").includes("node_modules")) continue;
    const edges: string[] = [];
    for (const m of readFileSync(join(root, file), "utf8").matchAll(IMPORT)) {
      const base = resolve(root, dirname(file), m[1] ?? m[2]!);
      const target = [base, `${base}.ts`, join(base, "index.ts")].find((p) => existsSync(p) && statSync(p).isFile());
      if (target) edges.push(relative(root, target));
    }
    graph.set(file, edges);
  }
  return graph;
}

/** Every circle a depth-first walk meets, as the files round it. */
function circles(graph: Map<string, string[]>): string[] {
  const open = new Set<string>();
  const done = new Set<string>();
  const path: string[] = [];
  const found: string[] = [];
  const visit = (file: string) => {
    open.add(file);
    path.push(file);
    for (const next of graph.get(file) ?? []) {
      if (open.has(next)) found.push([...path.slice(path.indexOf(next)), next].join(" -> "));
      else if (!done.has(next)) visit(next);
    }
    path.pop();
    open.delete(file);
    done.add(file);
  };
  for (const file of graph.keys()) if (!done.has(file)) visit(file);
  return found;
}

test("imports - no import circle among the repo's TypeScript files", () => {
  const graph = importGraph();
  expect(graph.size).toBeGreaterThan(100);
  expect(circles(graph)).toEqual([]);
});

test("imports - the check finds a circle where there is one", () => {
  const graph = new Map([
    ["a.ts", ["b.ts"]],
    ["b.ts", ["c.ts"]],
    ["c.ts", ["a.ts"]],
    ["d.ts", ["a.ts"]],
  ]);
  expect(circles(graph)).toEqual(["a.ts -> b.ts -> c.ts -> a.ts"]);
});
