// variants: h2direct | nethandover | net | gateway
import http2 from "node:http2";
import net from "node:net";
const variant = process.argv[2]!;
const port = Number(process.argv[3]);
const settings = JSON.parse(process.argv[4] ?? "{}");
const handler = (_req: any, res: any) => {
  res.end("x");
};
if (variant === "h2direct") {
  const s = http2.createServer({ settings }, handler);
  s.listen(port, "127.0.0.1");
} else if (variant === "nethandover") {
  const h2 = http2.createServer({ settings }, handler);
  net
    .createServer((sock) => {
      h2.emit("connection", sock);
    })
    .listen(port, "127.0.0.1");
} else if (variant === "net") {
  net
    .createServer((sock) => {
      sock.on("data", () => {});
    })
    .listen(port, "127.0.0.1");
}
setInterval(() => {}, 1000);
console.log("ready", process.pid);
if (variant === "gateway") {
  const { startTestGateway } = await import("../../../gateway/test/helpers.ts");
  const gw = await startTestGateway({ GATEWAY_PORT: String(port), FLEET_MAX_CONNECTIONS: "100000", LOG_LEVEL: "error" });
  console.log("gw", gw.url ?? "");
}
process.on("SIGUSR2", () => {
  Bun.gc(true);
});
if (variant === "bunlisten") {
  Bun.listen({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(s, d) {
        if (!s.data) s.data = { n: 0 };
        s.data.n += d.length;
      },
      open(s) {
        s.data = { n: 0, buf: null as any };
      },
    },
  });
}
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
