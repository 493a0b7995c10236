/**
 * `bun tracker/main.ts`: config from the environment, the tracker, and a clean stop on
 * SIGTERM/SIGINT (open watches end with UNAVAILABLE; unacked batches are redelivered to the next tracker).
 */
import { runService } from "../lib/run-service";
import { createTracker } from "./tracker";

await runService({ name: "tracker", start: createTracker, stop: (tracker) => tracker.close() });
