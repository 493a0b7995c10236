/**
 * `bun gateway/main.ts`: config from the environment, the gateway, and a graceful drain on
 * SIGTERM/SIGINT (exit 0 once in-flight points are acked, or the drain timeout passed).
 */
import { runService } from "../lib/run-service";
import { createGateway } from "./gateway";

await runService({
  name: "gateway",
  tls: (config) => config.tlsCert !== "",
  start: createGateway,
  stop: (gateway) => gateway.drain(),
  stopName: "drain",
});
