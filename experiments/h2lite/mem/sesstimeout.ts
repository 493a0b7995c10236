import http2 from "node:http2";
const server = http2.createServer();
server.on("session", (s) =>
  s.setTimeout(1000, () => {
    console.log("session timeout fired at", Date.now() - t0);
    s.close();
  }),
);
server.on("stream", (st) => {
  st.respond({ ":status": 200 });
  const iv = setInterval(() => st.write("x"), 200);
  st.on("close", () => clearInterval(iv));
});
let t0 = Date.now();
server.listen(0, "127.0.0.1", async () => {
  const port = (server.address() as any).port;
  const { spawn } = await import("node:child_process");
  // node's client (not Bun's) to be independent
  const c = spawn(
    "node",
    [
      "-e",
      `const h=require('http2');const c=h.connect('http://127.0.0.1:${port}');const r=c.request({':path':'/'});let n=0;r.on('data',()=>n++);setTimeout(()=>{console.log('client got',n,'chunks, closed:',c.closed||c.destroyed);process.exit(0)},3000);c.on('close',()=>console.log('client session closed at',Date.now()))`,
    ],
    { stdio: "inherit" },
  );
  t0 = Date.now();
  c.on("exit", () => process.exit(0));
});
