// grpc-js: C concurrent bidi calls on one channel (one HTTP/2 connection), each N messages; then a
// lock-step call (send one, wait for its answer) to see the round-trip time.
const grpc = require("/work/main/node_modules/@grpc/grpc-js");
const [port, c, n] = [process.argv[2], Number(process.argv[3] ?? 20), Number(process.argv[4] ?? 200)];
const id = (b) => b;
const Client = grpc.makeGenericClientConstructor(
  {
    Call: {
      path: "/h2lite.Demo/Echo",
      requestStream: true,
      responseStream: true,
      requestSerialize: id,
      requestDeserialize: id,
      responseSerialize: id,
      responseDeserialize: id,
    },
  },
  "Demo",
);
const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
function one(i) {
  return new Promise((res) => {
    const md = new grpc.Metadata();
    md.set("authorization", "Bearer tok-" + i);
    md.set("x-call", String(i));
    const call = client.Call(md);
    let got = 0;
    call.on("data", () => got++);
    call.on("status", (s) => res({ got, code: s.code }));
    call.on("error", () => {});
    for (let k = 0; k < n; k++) call.write(Buffer.alloc(64, k));
    call.end();
  });
}
(async () => {
  const rs = await Promise.all(Array.from({ length: c }, (_, i) => one(i)));
  const ok = rs.filter((r) => r.code === 0 && r.got === n).length;
  const call = client.Call(new grpc.Metadata());
  const times = [];
  let resolve;
  call.on("data", () => resolve());
  call.on("error", () => {});
  for (let k = 0; k < 200; k++) {
    const t = process.hrtime.bigint();
    await new Promise((r) => {
      resolve = r;
      call.write(Buffer.alloc(30));
    });
    times.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  call.end();
  times.sort((a, b) => a - b);
  console.log(JSON.stringify({ concurrent_calls: c, ok, lockstep_rtt_us_p50: Math.round(times[100]), p99: Math.round(times[198]) }));
  client.close();
})();
