// Child: opens N raw connections to the port, each one Sync stream with one point; then waits.
import { create, toBinary } from "@bufbuild/protobuf";
import { SyncRequestSchema } from "/work/main/gen/fleet/v1/ingest_pb";
import { grpcFrame, RawH2 } from "/work/main/test/raw-h2";
import { point } from "/work/main/gateway/test/helpers";
const [port, n, tokensFile] = [Number(process.argv[2]), Number(process.argv[3]), process.argv[4]!];
const tokens = (await Bun.file(tokensFile).json()) as string[];
const conns: RawH2[] = [];
for (let i = 0; i < n; i++) {
  const c = await RawH2.connect(port);
  const v = `census-${i}`;
  const id = c.request([
    [":method", "POST"],
    [":scheme", "http"],
    [":path", "/fleet.v1.IngestService/Sync"],
    [":authority", "gateway"],
    ["content-type", "application/grpc"],
    ["te", "trailers"],
    ["authorization", `Bearer ${tokens[i]}`],
  ]);
  await c.data(id, grpcFrame(toBinary(SyncRequestSchema, create(SyncRequestSchema, { position: point(v, 1) }))), 16384, false);
  conns.push(c);
}
console.log("open", conns.length);
await Bun.sleep(600_000);
