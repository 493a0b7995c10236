/**
 * Checks of one point, each with the reason a vehicle gets back in its ack. Pure and allocation-free
 * on the happy path: it runs once per point at 100k points/s.
 */
import { VehicleStatus, type Position } from "../gen/fleet/v1/position_pb";
import { RejectReason } from "../gen/fleet/v1/ingest_pb";
import { controlCharAt, controlCharMessage } from "../lib/ids";

export interface ValidateOptions {
  /** ms recorded_at may be ahead of the gateway's clock. */
  maxClockSkew: number;
  /** ms recorded_at may be behind the gateway's clock. */
  maxPointAge: number;
  /** m/s. */
  maxSpeed: number;
  /** Longest vehicle_id and order_id, in characters. */
  maxIdLength?: number;
}

/** A refused point: its reason and a message for a person. */
export interface Refusal {
  reason: RejectReason;
  message: string;
}

export const DEFAULT_MAX_ID_LENGTH = 128;

/** The highest VehicleStatus value. */
const MAX_STATUS = Math.max(...Object.values(VehicleStatus).filter((v): v is number => typeof v === "number"));

const refuse = (reason: RejectReason, message: string): Refusal => ({ reason, message });

/**
 * Returns undefined when the point is acceptable, else why not. Does not look at the vehicle
 * (the caller compares it with the token) nor at dedup (durable seqs do).
 */
export function validatePosition(p: Position, nowMs: number, o: ValidateOptions): Refusal | undefined {
  const maxId = o.maxIdLength ?? DEFAULT_MAX_ID_LENGTH;
  const { lat, lon } = p;
  // NaN fails every comparison, so "not in range" also catches it; ±Infinity is out of range.
  if (!(lat >= -90 && lat <= 90) || !(lon >= -180 && lon <= 180)) {
    return refuse(RejectReason.INVALID_COORDINATES, `lat ${lat}, lon ${lon}: need finite lat -90..90 and lon -180..180`);
  }
  if (p.seq === 0) return refuse(RejectReason.INVALID_FIELD, "seq is missing: number points from 1, increasing");
  const t = p.recordedAt;
  if (!t) return refuse(RejectReason.INVALID_FIELD, "recorded_at is missing");
  const ms = Number(t.seconds) * 1000 + t.nanos / 1e6;
  if (!Number.isFinite(ms)) return refuse(RejectReason.INVALID_FIELD, "recorded_at is not a valid time");
  if (ms > nowMs + o.maxClockSkew) {
    return refuse(
      RejectReason.TIME_IN_FUTURE,
      `recorded_at is ${Math.round((ms - nowMs) / 1000)} s in the future (max skew ${o.maxClockSkew / 1000} s): check the vehicle clock`,
    );
  }
  if (ms < nowMs - o.maxPointAge) {
    return refuse(RejectReason.TIME_TOO_OLD, `recorded_at is older than ${Math.round(o.maxPointAge / 3_600_000)} h: not taken`);
  }
  const { speed, heading, accuracy } = p;
  if (!(speed >= 0 && speed <= o.maxSpeed)) {
    return refuse(RejectReason.IMPLAUSIBLE_SPEED, `speed ${speed} m/s: need a finite speed from 0 to ${o.maxSpeed} m/s`);
  }
  if (!(heading >= 0 && heading <= 360)) return refuse(RejectReason.INVALID_FIELD, `heading ${heading}: need 0..360`);
  if (!(accuracy >= 0 && accuracy < Infinity)) return refuse(RejectReason.INVALID_FIELD, `accuracy ${accuracy}: need a finite value ≥ 0`);
  // An open enum: any int32 decodes. Stored as a smallint by history (70000 would be refused there
  // for ever) and as a byte by the tracker.
  if (!(p.status >= 0 && p.status <= MAX_STATUS)) {
    return refuse(
      RejectReason.INVALID_FIELD,
      `status ${p.status} is not a VehicleStatus: send 0 to ${MAX_STATUS} (VEHICLE_STATUS_UNSPECIFIED … VEHICLE_STATUS_OFFLINE)`,
    );
  }
  if (p.vehicleId.length === 0 || p.vehicleId.length > maxId) {
    return refuse(RejectReason.INVALID_FIELD, `vehicle_id must have 1 to ${maxId} characters`);
  }
  if (p.orderId.length > maxId) return refuse(RejectReason.INVALID_FIELD, `order_id must have at most ${maxId} characters`);
  if (controlCharAt(p.vehicleId) >= 0) return refuse(RejectReason.INVALID_FIELD, controlCharMessage("vehicle_id", p.vehicleId));
  if (controlCharAt(p.orderId) >= 0) return refuse(RejectReason.INVALID_FIELD, controlCharMessage("order_id", p.orderId));
  return undefined;
}
