/**
 * `bun history/main.ts`: config from the environment, the history service (JetStream writer and
 * HistoryService), and a clean stop on SIGTERM/SIGINT (the transaction in flight commits and is acked).
 */
import { runService } from "../lib/run-service";
import { guardPostgresClosedSocketWrite } from "../lib/storage";
import { createHistory } from "./history";

await runService({
  name: "history",
  prepare: (log) =>
    guardPostgresClosedSocketWrite((err) =>
      log.warn("postgres.js wrote to a closed connection (known bug): ignored, its queries are retried", { err }),
    ),
  start: createHistory,
  stop: (history) => history.close(),
});
