/**
 * `bun archiver/main.ts`: config from the environment, the archiver (a run every ARCHIVE_INTERVAL and
 * ArchiveService), and a stop on SIGTERM/SIGINT (a run cut short is finished by the next one).
 */
import { runService } from "../lib/run-service";
import { guardPostgresClosedSocketWrite } from "../lib/storage";
import { createArchiver } from "./archiver";

await runService({
  name: "archiver",
  prepare: (log) =>
    guardPostgresClosedSocketWrite((err) =>
      log.warn("postgres.js wrote to a closed connection (known bug): ignored, its queries are retried", { err }),
    ),
  start: createArchiver,
  stop: (archiver) => archiver.close(),
});
