/**
 * A stream flood from its own process (so that the server's event loop is not shared with it):
 * `bun test/clients/h2-stream-flood.ts <port> <authorization> <ms> <connections>`. Each connection
 * opens streams whose body never comes up to the server's limit, opens and resets as many again
 * (rapid reset), resets the first ones, and repeats; a connection the server cuts is replaced.
 * Prints {"streams": n, "cut": n} when done.
 */
import { frame, FRAME, RawH2 } from "../raw-h2";

const [port, auth, ms, connections] = [Number(process.argv[2]), process.argv[3]!, Number(process.argv[4]), Number(process.argv[5])];
const headers = (withAuth: boolean): [string, string][] => [
  [":method", "POST"],
  [":scheme", "http"],
  [":path", "/fleet.v1.IngestService/Resume"],
  [":authority", "localhost"],
  ["content-type", "application/grpc"],
  ["te", "trailers"],
  ...(withAuth ? ([["authorization", auth]] as [string, string][]) : []),
];
const cancel = Buffer.from([0, 0, 0, 8]);
const until = performance.now() + ms;
let streams = 0;
let cut = 0;

async function attacker(n: number): Promise<void> {
  while (performance.now() < until) {
    const c = await RawH2.connect(port);
    while (!c.closed && performance.now() < until) {
      const open = Array.from({ length: 100 }, () => c.request(headers(true)));
      for (let i = 0; i < 200; i++) c.send(frame(FRAME.RST_STREAM, 0, c.request(headers(false)), cancel));
      for (const id of open) c.send(frame(FRAME.RST_STREAM, 0, id, cancel));
      streams += 300;
      await Bun.sleep(n % 5);
    }
    if (c.closed) cut++;
    c.close();
  }
}

await Promise.all(Array.from({ length: connections }, (_, n) => attacker(n)));
console.log(JSON.stringify({ streams, cut }));
process.exit(0);
