/**
 * What a token may see of history: every vehicle (admin, or a watch token with `all`), listed
 * vehicles, or the points whose fleet or order it lists (a vehicle may change fleet; each stored
 * point carries the fleet it was sent under). Vehicle tokens see no history.
 */
import type { Claims } from "../lib/auth";
import { PermissionError } from "../lib/rpc";

export interface Access {
  all: boolean;
  vehicles: string[];
  fleets: string[];
  orders: string[];
}

/** The access of a caller; throws PermissionError for a vehicle token. */
export function accessOf(claims: Claims): Access {
  if (claims.role === "vehicle") throw new PermissionError("history needs a watch token (`fleet token watch …`), not a vehicle token");
  return { all: claims.all, vehicles: [...claims.vehicles], fleets: [...claims.fleets], orders: [...claims.orders] };
}

/** True when every point of the vehicle is visible. */
export function seesWholeVehicle(access: Access, vehicleId: string): boolean {
  return access.all || access.vehicles.includes(vehicleId);
}

/** True when a point is visible. */
export function seesPoint(access: Access, p: { vehicleId: string; fleetId: string; orderId: string }): boolean {
  return (
    access.all || access.vehicles.includes(p.vehicleId) || (p.fleetId !== "" && access.fleets.includes(p.fleetId)) || (p.orderId !== "" && access.orders.includes(p.orderId))
  );
}
