// The gateway with its vehicle port (lib/h2) in this process, N raw clients (clients.ts) in another, each
// with one Sync stream and one point: RSS and JS heap per connection after Bun.gc(true), and the JS
// object types each connection adds. Run: flock /tmp/fleet-bench.lock bun experiments/h2lite/census/gateway.ts 3000
import { heapStats } from "bun:jsc";
import { startTestGateway } from "/work/main/gateway/test/helpers";
const N = Number(process.argv[2] ?? 3000);
const t = await startTestGateway({ GATEWAY_VEHICLE_PORT: "0" });
const tokens: string[] = [];
for (let i = 0; i < N; i++) tokens.push(await t.token(`census-${i}`));
await Bun.write("/tmp/census-tokens.json", JSON.stringify(tokens));
const rss = () => process.memoryUsage().rss;
const snap = () => {
  Bun.gc(true);
  Bun.gc(true);
  return { rss: rss(), heap: heapStats() };
};
await Bun.sleep(500);
const a = snap();
const child = Bun.spawn(
  [
    "/work/main/node_modules/.bin/bun",
    "/work/main/experiments/h2lite/census/clients.ts",
    String(t.gateway.vehiclePort),
    String(N),
    "/tmp/census-tokens.json",
  ],
  { stdout: "pipe", stderr: "inherit" },
);
const reader = child.stdout.getReader();
const { value } = await reader.read();
console.log(new TextDecoder().decode(value));
await Bun.sleep(2000);
const b = snap();
console.log(
  "rss per conn",
  Math.round((b.rss - a.rss) / N),
  "heap per conn",
  Math.round((b.heap.heapSize - a.heap.heapSize) / N),
  "objects per conn",
  ((b.heap.objectCount - a.heap.objectCount) / N).toFixed(1),
);
const diffs: [string, number][] = [];
for (const k of new Set([...Object.keys(a.heap.objectTypeCounts), ...Object.keys(b.heap.objectTypeCounts)])) {
  const d = ((b.heap.objectTypeCounts as Record<string, number>)[k] ?? 0) - ((a.heap.objectTypeCounts as Record<string, number>)[k] ?? 0);
  if (d / N >= 0.5) diffs.push([k, d / N]);
}
diffs.sort((x, y) => y[1] - x[1]);
console.log(diffs.map(([k, v]) => `${k} ${v.toFixed(1)}`).join("\n"));
child.kill();
await t.gateway.close();
process.exit(0);
