/**
 * A free TCP port on 127.0.0.1, found by binding port 0 and closing the socket. Another process may
 * take the port before the caller binds it; the stack helper accepts that small race rather than
 * parsing each server's "listening on" line.
 */
import { createServer } from "node:net";

/** Resolves with a port that was free on 127.0.0.1 a moment ago. */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen({ port: 0, host, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error("could not find a free port"))));
    });
  });
}
