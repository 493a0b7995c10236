/**
 * TEMPORARY stand-in for the gateway, only to check the load generator until gateway/ exists.
 * Sync: first ack right away, then coalesced acks every 2 ms. No JetStream. Delete when gateway/ lands.
 */
import http2 from "node:http2";
import { create } from "@bufbuild/protobuf";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { ConnectRouter } from "@connectrpc/connect";
import { IngestService, SyncResponseSchema, type SyncRequest, type SyncResponse } from "../../gen/fleet/v1/ingest_pb";
import { loadConfig } from "../../lib/config";

const config = loadConfig();

function routes(router: ConnectRouter) {
  router.service(IngestService, {
    async *sync(requests: AsyncIterable<SyncRequest>): AsyncGenerator<SyncResponse> {
      let durable = 0;
      let last = 0;
      let ended = false;
      let wake: (() => void) | null = null;
      yield create(SyncResponseSchema, { ack: { vehicleId: "", durableSeq: 0 } });
      (async () => {
        for await (const r of requests) {
          const s = r.position?.seq ?? 0;
          if (s > durable) {
            const seq = s;
            setTimeout(() => {
              if (seq > durable) durable = seq;
              wake?.();
            }, 2);
          }
        }
        ended = true;
        setTimeout(() => wake?.(), 5);
      })();
      while (!ended) {
        await new Promise<void>((r) => (wake = r));
        wake = null;
        if (durable > last) {
          const acc = durable - last;
          last = durable;
          yield create(SyncResponseSchema, { ack: { durableSeq: durable, accepted: acc } });
        }
      }
    },
  });
}

const server = http2.createServer({ settings: { maxConcurrentStreams: config.maxStreamsPerConnection } }, connectNodeAdapter({ routes }));
server.listen(config.gatewayPort, "127.0.0.1", () => {
  const port = (server.address() as { port: number }).port;
  console.error(JSON.stringify({ level: "info", msg: "listening", service: "gateway", url: `http://127.0.0.1:${port}` }));
});
process.on("SIGTERM", () => process.exit(0));
