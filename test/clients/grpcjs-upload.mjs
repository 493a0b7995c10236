// One client-streaming Upload of COUNT points with @grpc/grpc-js run under `node` (Node's own
// nghttp2 underneath): a gRPC stack that shares no code with the gateway, protobuf encoded by hand
// here. For test/long-streams.test.ts.
//
// usage: node grpcjs-upload.mjs HOST:PORT TOKEN VEHICLE COUNT
// Points are recorded 200 ms apart, ending a minute ago, along a straight road. Prints one JSON
// line: {"durable": n, "accepted": n, "seconds": s} or {"code": n, "message": "..."}.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const require = createRequire(fileURLToPath(new URL("../../package.json", import.meta.url)));
const grpc = require("@grpc/grpc-js");
const [target, token, vehicle, countArg] = process.argv.slice(2);
const count = Number(countArg);

const varint = (n) => {
  const out = [];
  while (n > 127) {
    out.push((n % 128) | 128);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Buffer.from(out);
};
const field = (no, wire, body) => Buffer.concat([varint(no * 8 + wire), body]);
const bytesField = (no, b) => field(no, 2, Buffer.concat([varint(b.length), b]));
const double = (no, v) => {
  const b = Buffer.alloc(8);
  b.writeDoubleLE(v);
  return field(no, 1, b);
};
const float = (no, v) => {
  const b = Buffer.alloc(4);
  b.writeFloatLE(v);
  return field(no, 5, b);
};
const id = Buffer.from(vehicle);
const startMs = Date.now() - 60_000 - count * 200;
const uploadRequest = (i) => {
  const ms = startMs + i * 200;
  const ts = Buffer.concat([field(1, 0, varint(Math.floor(ms / 1000))), field(2, 0, varint((ms % 1000) * 1e6))]);
  const position = Buffer.concat([
    bytesField(1, id),
    field(2, 0, varint(i + 1)),
    bytesField(3, ts),
    double(4, 48 + i * 1e-6),
    double(5, 11),
    float(6, 1),
    float(8, 4),
  ]);
  return bytesField(1, position);
};
/** durable_seq and accepted of an UploadResponse { ack: IngestAck } (fields 2 and 3 of the ack). */
const readAck = (buf) => {
  const out = { durable: 0, accepted: 0 };
  let i = 0;
  const readVarint = (b) => {
    let n = 0;
    let mul = 1;
    for (;;) {
      const x = b[i++];
      n += (x & 127) * mul;
      if (x < 128) return n;
      mul *= 128;
    }
  };
  const walk = (b, end, inAck) => {
    while (i < end) {
      const key = readVarint(b);
      const no = Math.floor(key / 8);
      const wire = key % 8;
      if (wire === 0) {
        const v = readVarint(b);
        if (inAck && no === 2) out.durable = v;
        if (inAck && no === 3) out.accepted = v;
      } else if (wire === 2) {
        const len = readVarint(b);
        if (!inAck && no === 1) walk(b, i + len, true);
        else i += len;
      } else if (wire === 1) i += 8;
      else if (wire === 5) i += 4;
    }
  };
  walk(buf, buf.length, false);
  return out;
};

const client = new grpc.Client(target, grpc.credentials.createInsecure());
const md = new grpc.Metadata();
md.set("authorization", `Bearer ${token}`);
const t0 = Date.now();
const call = client.makeClientStreamRequest(
  "/fleet.v1.IngestService/Upload",
  (b) => b,
  (b) => b,
  md,
  { deadline: Date.now() + 120_000 },
  (err, res) => {
    if (err) console.log(JSON.stringify({ code: err.code, message: err.details }));
    else console.log(JSON.stringify({ ...readAck(res), seconds: (Date.now() - t0) / 1000 }));
    client.close();
  },
);
let i = 0;
const pump = () => {
  while (i < count) {
    if (!call.write(uploadRequest(i++))) return call.once("drain", pump);
  }
  call.end();
};
pump();
