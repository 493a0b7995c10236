/**
 * Publishes live events on core NATS after Redis took a change: to the vehicle's cell subject
 * (`live.<gh3>.<gh5>.<gh6>.<vehicle>`), also to its previous cell when it changed cell (so area
 * watches there see it leave), and to the order subjects when the order it serves changed.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { geohashEncode } from "../lib/geohash";
import { liveOrderSubject, liveSubject } from "../lib/subjects";
import { encodeLive, FIXED_BYTES, type LiveKind } from "./state-codec";

const cellOf = (record: Buffer) => geohashEncode(record.readInt32LE(24) / 1e7, record.readInt32LE(28) / 1e7, 6);
const orderOf = (record: Buffer) => record.toString("utf8", FIXED_BYTES + record.readUInt8(40));

export interface LivePublisher {
  /** One change of one vehicle; `previous` is the record it replaced (empty when none). */
  publish(kind: LiveKind, vehicleId: string, record: Buffer, previous?: Buffer): void;
  /** Messages published so far. */
  readonly published: number;
}

export function createLivePublisher(nc: NatsConnection): LivePublisher {
  let published = 0;
  const send = (subject: string, data: Uint8Array) => {
    nc.publish(subject, data);
    published++;
  };
  return {
    get published() {
      return published;
    },
    publish(kind, vehicleId, record, previous) {
      const data = encodeLive(kind, vehicleId, record);
      const cell = cellOf(record);
      send(liveSubject(cell, vehicleId), data);
      if (previous && previous.length >= FIXED_BYTES) {
        const before = cellOf(previous);
        if (before !== cell) send(liveSubject(before, vehicleId), data);
        const order = orderOf(record);
        const oldOrder = orderOf(previous);
        if (order !== oldOrder) {
          if (order) send(liveOrderSubject(order), data);
          if (oldOrder) send(liveOrderSubject(oldOrder), data);
        }
      } else {
        const order = orderOf(record);
        if (order) send(liveOrderSubject(order), data);
      }
    },
  };
}
