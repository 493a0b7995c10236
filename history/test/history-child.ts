/**
 * A history instance in a process of its own, on a test's stream (TEST_STREAM, TEST_SUBJECT_PREFIX)
 * and the configuration of its environment: the tests SIGKILL it, which an instance in the test's
 * own process cannot undergo. Logs "listening" (with its pid) once it serves.
 */
import { loadConfig } from "../../lib/config";
import { createLogger } from "../../lib/log";
import { guardPostgresClosedSocketWrite } from "../../lib/storage";
import { createHistory } from "../history";

guardPostgresClosedSocketWrite(() => {});
const config = loadConfig();
await createHistory({
  config,
  log: createLogger({ level: config.logLevel, fields: { service: "history", pid: process.pid } }),
  stream: process.env.TEST_STREAM,
  subjectPrefix: process.env.TEST_SUBJECT_PREFIX,
});
