/**
 * Logs what a JetStream consume() is going through, so that a sink that stops receiving says why.
 *
 * nats.js recovers a pull lost with its server by itself: two missed idle heartbeats (half of
 * `expires` each), then a consumer-info request every `expires` until one is answered, then a new
 * pull. After a network partition healed (chaos/consume-probe.ts, consumer leader on the cut-off
 * node, `expires` 5 s) that took 5-16 s after the consumer had a leader again, and a consumer whose
 * new leader's stream replica was behind sent heartbeats without messages for ~18 s, which nats.js
 * cannot tell from an idle stream. Both looked alike from outside ("the tracker applied nothing"):
 * these lines tell them apart.
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

/**
 * Reads `messages.status()` until the consumer closes: the first missed-heartbeat notice of a stall
 * and every notice of a missing consumer or stream is a warning (later notices of the same stall are
 * debug lines), and the first pull or heartbeat after a stall is logged with how long it lasted.
 */
export function logConsumeStatus(messages: ConsumerMessages, log: Logger, fields: Record<string, unknown>): void {
  let stalledAt = 0;
  const stalled = (s: ConsumerNotification) => {
    if (stalledAt === 0) {
      stalledAt = performance.now();
      log.warn("jetstream consumer stalled: nats.js pulls again once the consumer answers", { ...fields, ...s });
    } else {
      log.debug("jetstream consumer still stalled", { ...fields, ...s, ms: Math.round(performance.now() - stalledAt) });
    }
  };
  void (async () => {
    for await (const s of messages.status()) {
      if (STALLS.has(s.type)) stalled(s);
      else if (stalledAt > 0 && (s.type === "heartbeat" || s.type === "next")) {
        // "next": nats.js pulled again (its consumer-info request was answered); "heartbeat": a server holds our pull.
        log.info("jetstream consumer recovered", { ...fields, event: s.type, stalledMs: Math.round(performance.now() - stalledAt) });
        stalledAt = 0;
      }
    }
  })();
}
