import http2 from "node:http2";
const port = Number(process.argv[3]);
const mode = process.argv[2];
const s = http2.createServer({ settings: JSON.parse(process.argv[4] ?? "{}") }, (_req, res) => {
  res.writeHead(200, { "content-type": "application/grpc" });
});
if (mode === "stream") {
  s.removeAllListeners("request");
  s.on("stream", (st) => {
    st.respond({ ":status": 200, "content-type": "application/grpc" });
  });
}
s.listen(port, "127.0.0.1");
setInterval(() => {}, 1000);
console.log("ready");
process.on("SIGUSR2", () => {
  Bun.gc(true);
});
import { heapStats } from "bun:jsc";
let base: Record<string, number> | undefined;
process.on("SIGUSR1", () => {
  Bun.gc(true);
  const h = heapStats();
  if (!base) {
    base = h.objectTypeCounts;
    console.log("base heap", h.heapSize);
    return;
  }
  const diff = Object.entries(h.objectTypeCounts)
    .map(([k, v]) => [k, v - (base![k] ?? 0)] as const)
    .filter(([, d]) => d > 1000)
    .sort((a, b) => b[1] - a[1]);
  console.log("heap", h.heapSize, JSON.stringify(diff.slice(0, 40)));
});
