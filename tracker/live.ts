/**
 * Publishes live events on core NATS after Redis took a change: to the vehicle's cell subject
 * (`live.<gh3>.<gh5>.<gh6>.<vehicle>`), also to its previous cell when it changed cell (so area
 * watches there see it leave), and to the order subjects (`liveorder.<fleet>.<order>`) when the
 * order it serves, or its fleet, changed.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { geohashEncode, geohashSameCell } from "../lib/geohash";
import { liveOrderSubject, liveSubject } from "../lib/nats";
import { encodeLive, FIXED_BYTES, type LiveKind } from "./state-codec";
import type { Before } from "./store";

const cellOf = (lat: number, lon: number) => geohashEncode(lat, lon, 6);
const fleetOf = (record: Buffer) => record.toString("utf8", FIXED_BYTES, FIXED_BYTES + record.readUInt8(40));
const orderOf = (record: Buffer) => record.toString("utf8", FIXED_BYTES + record.readUInt8(40));

export interface LivePublisher {
  /** One change of one vehicle; `before` is what it was (undefined when it is new). */
  publish(kind: LiveKind, vehicleId: string, record: Buffer, before?: Before): void;
  /**
   * One point's change, its event already encoded (store.applyBatch); `before` is the vehicle's
   * previous record (undefined when it is new). The same subjects as `publish`.
   */
  publishEvent(vehicleId: string, event: Uint8Array, record: Buffer, before?: Buffer): void;
  /** Messages published so far. */
  readonly published: number;
}

/** `local` receives every message too: this process's own watches (its NATS connection does not echo). */
export function createLivePublisher(nc: NatsConnection, local?: (subject: string, data: Uint8Array) => void): LivePublisher {
  let published = 0;
  const send = (subject: string, data: Uint8Array) => {
    nc.publish(subject, data);
    local?.(subject, data);
    published++;
  };
  return {
    get published() {
      return published;
    },
    publish(kind, vehicleId, record, before) {
      const data = encodeLive(kind, vehicleId, record);
      const cell = cellOf(record.readInt32LE(24) / 1e7, record.readInt32LE(28) / 1e7);
      send(liveSubject(cell, vehicleId), data);
      const order = orderOf(record);
      const fleet = fleetOf(record);
      if (before) {
        const oldCell = cellOf(before.lat, before.lon);
        if (oldCell !== cell) send(liveSubject(oldCell, vehicleId), data);
        if (order !== before.orderId || fleet !== before.fleetId) {
          if (order) send(liveOrderSubject(fleet, order), data);
          if (before.orderId) send(liveOrderSubject(before.fleetId, before.orderId), data);
        }
      } else if (order) send(liveOrderSubject(fleet, order), data);
    },
    publishEvent(vehicleId, event, record, before) {
      const lat = record.readInt32LE(24);
      const lon = record.readInt32LE(28);
      const cell = cellOf(lat / 1e7, lon / 1e7);
      send(liveSubject(cell, vehicleId), event);
      const orderAt = FIXED_BYTES + record[40]!;
      if (before) {
        const oldLat = before.readInt32LE(24);
        const oldLon = before.readInt32LE(28);
        // Most points stay in their cell: found out without making the old cell's string.
        if ((oldLat !== lat || oldLon !== lon) && !geohashSameCell(oldLat / 1e7, oldLon / 1e7, lat / 1e7, lon / 1e7, 6)) {
          send(liveSubject(cellOf(oldLat / 1e7, oldLon / 1e7), vehicleId), event);
        }
        const oldOrderAt = FIXED_BYTES + before[40]!;
        // Fleet and order (from the fleet's length on) compared as bytes: most points keep both, and
        // then no string is made.
        if (record.length !== before.length || record.compare(before, 40, before.length, 40, record.length) !== 0) {
          const order = record.toString("utf8", orderAt);
          const oldOrder = before.toString("utf8", oldOrderAt);
          if (order) send(liveOrderSubject(record.toString("utf8", FIXED_BYTES, orderAt), order), event);
          if (oldOrder) send(liveOrderSubject(before.toString("utf8", FIXED_BYTES, oldOrderAt), oldOrder), event);
        }
      } else if (record.length > orderAt)
        send(liveOrderSubject(record.toString("utf8", FIXED_BYTES, orderAt), record.toString("utf8", orderAt)), event);
    },
  };
}
