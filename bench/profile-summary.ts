/**
 * Reads a Chrome-format `.cpuprofile` (what `bun --cpu-prof` writes) and lists where the time
 * went: functions by self time, and files by self time, so a bench can say what bounds a service.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";

const ROOT = `${join(import.meta.dir, "..")}/`;

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples?: number[];
}

export interface ProfileLine {
  name: string;
  share: number;
}

/** Top `limit` functions and files by share of samples (0..1). */
export function summarizeProfile(path: string, limit = 15): { functions: ProfileLine[]; files: ProfileLine[]; samples: number } {
  const profile = JSON.parse(readFileSync(path, "utf8")) as CpuProfile;
  const hits = new Map<number, number>();
  if (profile.samples && profile.samples.length > 0) for (const id of profile.samples) hits.set(id, (hits.get(id) ?? 0) + 1);
  else for (const n of profile.nodes) hits.set(n.id, n.hitCount ?? 0);
  let total = 0;
  const byFunction = new Map<string, number>();
  const byFile = new Map<string, number>();
  for (const n of profile.nodes) {
    const h = hits.get(n.id) ?? 0;
    if (h === 0) continue;
    total += h;
    const file = shortUrl(n.callFrame.url);
    const fn = `${n.callFrame.functionName || "(anonymous)"} ${file}${file ? `:${n.callFrame.lineNumber + 1}` : ""}`;
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + h);
    const key = file || n.callFrame.functionName || "(native)";
    byFile.set(key, (byFile.get(key) ?? 0) + h);
  }
  const top = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, limit)
      .map(([name, h]) => ({ name, share: h / Math.max(1, total) }));
  return { functions: top(byFunction), files: top(byFile), samples: total };
}

function shortUrl(url: string): string {
  if (!url) return "";
  const s = decodeURIComponent(url.replace(/^file:\/\//, ""));
  const nm = s.lastIndexOf("node_modules/");
  if (nm >= 0) return s.slice(nm + "node_modules/".length);
  return s.startsWith(ROOT) ? s.slice(ROOT.length) : s;
}

if (import.meta.main) {
  const path = process.argv[2];
  if (!path) {
    process.stderr.write("usage: bun bench/profile-summary.ts <file.cpuprofile> [limit]\n");
    process.exit(2);
  }
  const { functions, files, samples } = summarizeProfile(path, Number(process.argv[3] ?? 25));
  process.stdout.write(`${samples} samples\n\nby function (self):\n`);
  for (const l of functions) process.stdout.write(`  ${(l.share * 100).toFixed(1).padStart(5)}%  ${l.name}\n`);
  process.stdout.write("\nby file (self):\n");
  for (const l of files) process.stdout.write(`  ${(l.share * 100).toFixed(1).padStart(5)}%  ${l.name}\n`);
}
