// grpc-js over TLS (ALPN h2) to the h2lite server: 1000 echoes.
const grpc = require("/work/main/node_modules/@grpc/grpc-js");
const fs = require("fs");
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
const client = new Client(`localhost:${process.argv[2]}`, grpc.credentials.createSsl(fs.readFileSync("/tmp/h2lite/tls/cert.pem")));
const call = client.Call(new grpc.Metadata());
let got = 0;
call.on("data", () => got++);
call.on("error", () => {});
call.on("status", (s) => {
  console.log(JSON.stringify({ client: "grpc-js TLS", got, code: s.code, details: s.details }));
  client.close();
});
for (let i = 0; i < 1000; i++) call.write(Buffer.alloc(100, i));
call.end();
