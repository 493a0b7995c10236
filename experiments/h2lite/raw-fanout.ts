// The floor under a fan-out: bare Bun.listen sockets, one 38-byte write to each of W connections
// per event-loop turn, R rounds (no HTTP/2). Client: node:net, W connections, counts bytes.
// usage: bun raw-fanout.ts W R
const [W, R] = [Number(process.argv[2]), Number(process.argv[3])];
const msg = Buffer.alloc(38, 1);
const socks: any[] = [];
const l = Bun.listen({
  hostname: "127.0.0.1",
  port: 0,
  socket: {
    open(s) {
      socks.push(s);
      if (socks.length === W) setTimeout(start, 300);
    },
    data() {},
  },
});
function start() {
  const t0 = process.cpuUsage();
  let round = 0;
  const step = () => {
    for (const s of socks) s.write(msg);
    if (++round < R) return void setImmediate(step);
    setImmediate(() => {
      const u = process.cpuUsage(t0);
      const n = W * R;
      console.log(
        `raw ${JSON.stringify({ watches: W, rounds: R, user_us_per_message: u.user / n, system_us_per_message: u.system / n, us_per_message: (u.user + u.system) / n })}`,
      );
      for (const s of socks) s.end();
      l.stop();
    });
  };
  setImmediate(step);
}
const { spawn } = await import("node:child_process");
spawn(
  "node",
  [
    "-e",
    `const net=require("net");let n=0,c=0;for(let i=0;i<${W};i++){const s=net.connect({port:${l.port},host:"127.0.0.1",localAddress:"127.0.0."+(2+i%50)});s.on("data",d=>n+=d.length);s.on("close",()=>{if(++c===${W})console.log("client bytes",n)})}`,
  ],
  { stdio: "inherit" },
);
