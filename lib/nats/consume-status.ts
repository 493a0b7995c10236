/**
 * Logs what a JetStream consume() is going through, so that a sink that stops receiving says why.
 *
 * nats.js recovers a pull lost with its server by itself: two missed idle heartbeats (half of
 * `expires` each), then a consumer-info request every `expires` until one is answered, then a new
 * pull. After a network partition healed (chaos/consume-probe.ts, consumer leader on the cut-off
 * node, `expires` 5 s) that took up to 16 s after the consumer had a leader again; once, the pulls
 * were answered by heartbeats alone (their stream seq stuck while the stream grew) for ~18 s, which
 * nats.js cannot tell from an idle stream. Both look alike from outside ("the tracker applied
 * nothing"); the first logs a stall and its length here, the second logs nothing.
 */
import type { ConsumerMessages, ConsumerNotification } from "@nats-io/jetstream";
import type { Logger } from "../log";

/** Notifications that mean messages stopped coming; the rest (heartbeats, pulls, expiries) are routine. */
const STALLS: ReadonlySet<ConsumerNotification["type"]> = new Set([
  "heartbeats_missed",
  "consumer_deleted",
  "consumer_not_found",
  "stream_not_found",
  "no_responders",
  "exceeded_limits",
]);

export interface ConsumeStatus {
  /** Call for each message received: the first one after a stall ends it (logged with how long it lasted). */
  delivered(): void;
}

/**
 * Reads `messages.status()` until the consumer closes. The first notice of a stall (missed
 * heartbeats, a missing consumer or stream, no responders) is a warning, later ones debug lines;
 * the stall ends with the first message, or the first heartbeat (a server holds our pull and the
 * stream is idle). A new pull alone ends nothing: after a heal nats.js pulled again and heard
 * nothing for another 2.5 s more than once.
 */
export function logConsumeStatus(messages: ConsumerMessages, log: Logger, fields: Record<string, unknown>): ConsumeStatus {
  let stalledAt = 0;
  const recovered = (by: string) => {
    log.info("jetstream consumer recovered", { ...fields, by, stalledMs: Math.round(performance.now() - stalledAt) });
    stalledAt = 0;
  };
  void (async () => {
    for await (const s of messages.status()) {
      if (STALLS.has(s.type)) {
        if (stalledAt === 0) {
          stalledAt = performance.now();
          log.warn("jetstream consumer stalled: nats.js pulls again once the consumer answers", { ...fields, ...s });
        } else {
          log.debug("jetstream consumer still stalled", { ...fields, ...s, ms: Math.round(performance.now() - stalledAt) });
        }
      } else if (s.type === "heartbeat" && stalledAt > 0) {
        recovered("heartbeat");
      }
    }
  })();
  return {
    delivered() {
      if (stalledAt > 0) recovered("message");
    },
  };
}
