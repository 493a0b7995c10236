/**
 * What a token may see of history: every vehicle (admin, or a watch token with `all`), listed
 * vehicles, or the points whose fleet or (fleet, order) it lists (a vehicle may change fleet; each
 * stored point carries the fleet it was sent under, stamped by the gateway from the vehicle's
 * token). Order ids are unique within a fleet only, so an order grant is a (fleet, order) pair: a
 * fleet-B vehicle that sends "ORD-1" is not seen by a grant of A's ORD-1. Vehicle tokens see no
 * history.
 */
import { parseOrderGrant, type Claims } from "../lib/auth";
import { PermissionError } from "../lib/grpc";

export interface OrderGrant {
  fleetId: string;
  orderId: string;
}

export interface Access {
  all: boolean;
  vehicles: string[];
  fleets: string[];
  orders: OrderGrant[];
}

/** The access of a caller; throws PermissionError for a vehicle token. */
export function accessOf(claims: Claims): Access {
  if (claims.role === "vehicle") throw new PermissionError("history needs a watch token (`fleet token watch …`), not a vehicle token");
  // verifyToken keeps only grants that name a fleet; one that does not grants nothing here either.
  const orders = claims.orders.map(parseOrderGrant).filter((g): g is OrderGrant => g !== undefined);
  return { all: claims.all, vehicles: [...claims.vehicles], fleets: [...claims.fleets], orders };
}

/** True when every point of the vehicle is visible. */
export function seesWholeVehicle(access: Access, vehicleId: string): boolean {
  return access.all || access.vehicles.includes(vehicleId);
}

/** True when a point is visible. */
export function seesPoint(access: Access, p: { vehicleId: string; fleetId: string; orderId: string }): boolean {
  return (
    access.all ||
    access.vehicles.includes(p.vehicleId) ||
    (p.fleetId !== "" && access.fleets.includes(p.fleetId)) ||
    (p.orderId !== "" && access.orders.some((g) => g.fleetId === p.fleetId && g.orderId === p.orderId))
  );
}
