import net from "node:net";
import { encodeHeaders, frame, FRAME, FLAG } from "../../../test/raw-h2.ts";
const port = Number(process.argv[2]);
const n = Number(process.argv[3]);
const withStream = process.argv[4] === "stream";
const tokens: string[] = [];
if (withStream) {
  const { mintVehicleToken, tokenKeys } = await import("../../../lib/auth");
  const { loadConfig } = await import("../../../lib/config");
  const keys = tokenKeys(loadConfig({ FLEET_JWT_SECRET: "gateway-test-secret" }));
  for (let i = 0; i < n; i++) tokens.push(await mintVehicleToken(keys, `veh-${i}`, { fleetId: "fleet-a" }));
}
const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
let open = 0,
  got = 0;
for (let i = 0; i < n; i++) {
  const s = net.connect({ port, host: "127.0.0.1", localAddress: `127.0.0.${2 + (i % 50)}` }, () => {
    const parts = [preface, frame(FRAME.SETTINGS, 0, 0)];
    if (withStream)
      parts.push(
        frame(
          FRAME.HEADERS,
          FLAG.END_HEADERS,
          1,
          encodeHeaders([
            [":method", "POST"],
            [":scheme", "http"],
            [":path", "/fleet.v1.IngestService/Sync"],
            [":authority", `127.0.0.1:${port}`],
            ["content-type", "application/grpc"],
            ["te", "trailers"],
            ["authorization", `Bearer ${tokens[i]}`],
          ]),
        ),
      );
    s.write(Buffer.concat(parts));
    open++;
  });
  s.on("data", (d) => {
    got++;
    if (d[3] === 4 && (d[4] & 1) === 0) s.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
  });
  s.on("error", () => {});
  s.on("close", () => open--);
  if (i % 500 === 0) await Bun.sleep(20);
}
await Bun.sleep(3000);
console.log("open", open, "frames", got);
await Bun.sleep(100000);
