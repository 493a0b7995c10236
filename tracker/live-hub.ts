/**
 * One NATS subscription per live subject per process, shared by every watch that wants it: area
 * watches overlap (the same cells) and a vehicle may be watched many times, and NATS delivers a
 * message once per subscription. Each message is read once (peekLive) and handed to every listener
 * of its subject, in the order NATS delivered it.
 */
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import type { Logger } from "../lib/log";
import { liveSubscriptionsOf } from "../lib/nats";
import { peekLive, type LiveView } from "./state-codec";

export type LiveListener = (view: LiveView) => void;

export interface LiveHub {
  add(subject: string, listener: LiveListener): void;
  remove(subject: string, listener: LiveListener): void;
  /**
   * Hands a message this process published on `subject` to its listeners, as NATS would have: the
   * process's connection does not echo its own messages (noEcho), which saves them a round trip
   * through nats-server and nats.js's parsing.
   */
  deliver(subject: string, data: Uint8Array): void;
  /** Subjects subscribed now. */
  readonly size: number;
}

/** `onMessage` sees each message once per subscription it reaches, before its listeners (the fan-out delay metric). */
export function createLiveHub(nc: NatsConnection, log: Logger, onMessage?: (view: LiveView) => void): LiveHub {
  const entries = new Map<string, { sub: Subscription; listeners: Set<LiveListener> }>();
  const dispatch = (listeners: Set<LiveListener>, view: LiveView) => {
    onMessage?.(view);
    for (const l of listeners) l(view);
  };
  return {
    get size() {
      return entries.size;
    },
    add(subject, listener) {
      let entry = entries.get(subject);
      if (!entry) {
        const listeners = new Set<LiveListener>();
        const sub = nc.subscribe(subject, {
          callback: (err, msg) => {
            if (err) return;
            let view: LiveView;
            try {
              view = peekLive(msg.data);
            } catch (e) {
              log.warn("undecodable live event ignored", { subject: msg.subject, err: e });
              return;
            }
            dispatch(listeners, view);
          },
        });
        entry = { sub, listeners };
        entries.set(subject, entry);
      }
      entry.listeners.add(listener);
    },
    deliver(subject, data) {
      let view: LiveView | undefined;
      for (const pattern of liveSubscriptionsOf(subject)) {
        const entry = entries.get(pattern);
        if (entry) dispatch(entry.listeners, (view ??= peekLive(data)));
      }
    },
    remove(subject, listener) {
      const entry = entries.get(subject);
      if (!entry) return;
      entry.listeners.delete(listener);
      if (entry.listeners.size === 0) {
        entry.sub.unsubscribe();
        entries.delete(subject);
      }
    },
  };
}
