// grpc-js (under node) generic bidi client: sends N messages of SIZE bytes on METHOD, reads the answers.
// usage: node grpcjs-client.cjs PORT METHOD N SIZE
const grpc = require("/work/main/node_modules/@grpc/grpc-js");
const [port, method, n, size] = [process.argv[2], process.argv[3], Number(process.argv[4] ?? 1000), Number(process.argv[5] ?? 100)];
const id = (b) => b;
const Client = grpc.makeGenericClientConstructor(
  {
    Call: {
      path: method,
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
const md = new grpc.Metadata();
md.set("authorization", "Bearer " + "x".repeat(300));
const call = client.Call(md);
let got = 0,
  bytes = 0;
const t0 = Date.now();
call.on("data", (b) => {
  got++;
  bytes += b.length;
});
call.on("status", (s) => {
  console.log(
    JSON.stringify({
      client: "grpc-js",
      method,
      sent: n,
      got,
      bytes_received: bytes,
      code: s.code,
      details: s.details,
      ms: Date.now() - t0,
    }),
  );
  client.close();
});
call.on("error", () => {});
(async () => {
  for (let i = 0; i < n; i++) {
    const m = Buffer.alloc(size, i & 255);
    m.writeUInt32BE(i, 0);
    if (!call.write(m)) await new Promise((r) => call.once("drain", r));
  }
  call.end();
})();
