/**
 * What a watch token lets its holder see: a vehicle is visible when the token grants all, names the
 * vehicle, its fleet, or the order it serves now in its fleet (`fleet/order`: order ids are unique
 * within a fleet only, so "ORD-1" of fleet B is not "ORD-1" of fleet A). Every answer and every
 * streamed event passes here.
 */
import type { HandlerContext } from "@connectrpc/connect";
import { orderGrant, type WatchClaims } from "../lib/auth";
import { claimsOf, PermissionError } from "../lib/grpc";
import type { LiveView } from "./state-codec";

/** The watch claims of a call; a vehicle token is PERMISSION_DENIED. */
export function watchClaims(ctx: HandlerContext): WatchClaims {
  const claims = claimsOf(ctx);
  if (claims.role === "vehicle")
    throw new PermissionError("a vehicle token cannot query the tracker: use a watch token (`fleet token watch`)");
  return claims;
}

/** True when the token grants this vehicle in its current fleet and order (the pair: see orderGrant). */
export function canSee(claims: WatchClaims, vehicleId: string, fleetId: string, orderId: string): boolean {
  return (
    claims.all ||
    claims.vehicles.includes(vehicleId) ||
    (fleetId !== "" && claims.fleets.includes(fleetId)) ||
    (orderId !== "" && fleetId !== "" && claims.orders.length > 0 && claims.orders.includes(orderGrant(fleetId, orderId)))
  );
}

/** True when the token grants the vehicle whatever its fleet or order (all, or named). */
export function grantsById(claims: WatchClaims, vehicleId: string): boolean {
  return claims.all || claims.vehicles.includes(vehicleId);
}

/** canSee for a live event: the fleet and order (which need the full state) only when the id did not settle it. */
export function canSeeView(claims: WatchClaims, view: LiveView): boolean {
  if (claims.all || claims.vehicles.includes(view.vehicleId)) return true;
  if (claims.fleets.length === 0 && claims.orders.length === 0) return false;
  return canSee(claims, view.vehicleId, view.state.fleetId, view.state.orderId);
}
