// A watcher that stops reading: runs under Node.js, whose HTTP/2 stops granting flow-control
// window to a paused stream (a paused client under Bun 1.4 keeps granting it, so the server never
// feels the slow reader). grpc-js, raw bytes in and out.
// argv: host:port, token, method path, request (base64). Prints "paused" after the first message,
// resumes reading on any line on stdin, prints the final status as JSON.
import grpc from "@grpc/grpc-js";

const [target, token, path, request] = process.argv.slice(2);
const raw = (b) => b;
const Client = grpc.makeGenericClientConstructor(
  {
    watch: {
      path,
      requestStream: false,
      responseStream: true,
      requestSerialize: raw,
      requestDeserialize: raw,
      responseSerialize: raw,
      responseDeserialize: raw,
    },
  },
  "Slow",
);
const client = new Client(target, grpc.credentials.createInsecure());
const md = new grpc.Metadata();
md.set("authorization", `Bearer ${token}`);
const call = client.watch(Buffer.from(request, "base64"), md);
let messages = 0;
call.on("data", () => {
  if (++messages === 1) {
    call.pause();
    console.log("paused");
  }
});
process.stdin.on("data", () => call.resume());
call.on("error", (e) => {
  console.log(JSON.stringify({ code: e.code, details: e.details, messages }));
  process.exit(0);
});
call.on("end", () => {
  console.log(JSON.stringify({ code: 0, messages }));
  process.exit(0);
});
