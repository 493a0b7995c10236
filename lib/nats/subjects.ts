/**
 * NATS names shared by every service: the positions stream, its subjects and consumers,
 * and the live fan-out subjects. One place, so that producers and consumers agree.
 */
import { fnv1aUtf16 } from "../fnv1a";

/** The JetStream stream that holds every accepted position. */
export const POSITIONS_STREAM = "FLEET_POSITIONS";

/** Subjects of the positions stream: `fleet.pos.<partition>`. */
export const POSITIONS_SUBJECTS = "fleet.pos.>";

/** Durable consumer names, one per sink. */
export const CONSUMERS = { tracker: "tracker", history: "history" } as const;

/** Headers the gateway sets on every positions message. */
export const HEADERS = {
  /** The gateway instance that published the message (lets a gateway skip its own messages when tailing). */
  gateway: "Fleet-Gateway",
  /** Number of points in the message. */
  count: "Fleet-Count",
} as const;

/**
 * Partition of a vehicle: FNV-1a of its id (over UTF-16 code units, as always) modulo `partitions`. All points of one vehicle
 * go to the same subject, so they stay in order in the stream.
 */
export function partitionOf(vehicleId: string, partitions: number): number {
  return fnv1aUtf16(vehicleId) % partitions;
}

/** Subject of one partition of the positions stream. */
export function positionsSubject(partition: number): string {
  return `fleet.pos.${partition}`;
}

/**
 * Live fan-out subject of one vehicle's update: `live.<geohash3>.<geohash5>.<geohash6>.<vehicle>`,
 * from the geohash (6 characters or more) of its position. Three cell sizes (~156 km, ~4.9 km,
 * ~1.2 × 0.6 km) let an area watch subscribe at the size that fits it: a 1 km circle takes a dozen
 * 6-character cells instead of receiving all of a 24 km² 5-character one. Vehicle ids are
 * sanitised so that they form one subject token.
 */
export function liveSubject(geohash: string, vehicleId: string): string {
  return `live.${geohash.slice(0, 3)}.${geohash.slice(0, 5)}.${geohash.slice(0, 6)}.${subjectToken(vehicleId)}`;
}

/** Makes a string safe as one NATS subject token (no dots, spaces, wildcards). */
export function subjectToken(value: string): string {
  // Most ids are letters, digits, '-' and '_': checked by a loop, as the regex replace cost more
  // than the rest of a live subject (one per point the tracker takes).
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    const plain = (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x5f;
    if (!plain) return value.replace(/[.\s*>]/g, "_");
  }
  return value;
}

/** Every live subject of one vehicle, whatever its cell: what a vehicle watch subscribes to. */
export function liveVehicleWildcard(vehicleId: string): string {
  return `live.*.*.*.${subjectToken(vehicleId)}`;
}

/** Live subjects of one cell: a geohash of 6, 5 or 3 characters. */
export function liveCellWildcard(geohash: string): string {
  if (geohash.length >= 6) return `live.${geohash.slice(0, 3)}.${geohash.slice(0, 5)}.${geohash.slice(0, 6)}.*`;
  if (geohash.length === 5) return `live.${geohash.slice(0, 3)}.${geohash}.>`;
  return `live.${geohash.slice(0, 3)}.>`;
}

/**
 * The subscriptions, of the shapes made above (a vehicle's wildcard, a cell's, `live.>`, an order's),
 * that a live subject reaches: where NATS would deliver it. A tracker hands its own events to its
 * watches through these instead of through NATS.
 */
export function liveSubscriptionsOf(subject: string): string[] {
  const t = subject.split(".");
  if (t.length !== 5 || t[0] !== "live") return [subject];
  return [subject, `live.*.*.*.${t[4]}`, `live.${t[1]}.${t[2]}.${t[3]}.*`, `live.${t[1]}.${t[2]}.>`, `live.${t[1]}.>`, "live.>"];
}

/**
 * Events of the vehicle serving an order of a fleet, sent when a vehicle takes or leaves it: an order
 * watch subscribes here to follow a reassignment. The fleet is part of the subject because order ids
 * are unique within a fleet only (an empty fleet is "_": a subject token cannot be empty).
 */
export function liveOrderSubject(fleetId: string, orderId: string): string {
  return `liveorder.${subjectToken(fleetId) || "_"}.${subjectToken(orderId)}`;
}
