/**
 * Bearer JWTs for every service. HS256 only (the algorithm is pinned, so `alg: none` and
 * key-confusion tricks are refused); `exp`, `iss` and `aud` are required and checked.
 *
 * - A vehicle token binds one vehicle: `sub` is the vehicle id, `role` is "vehicle".
 * - A watch token lists what its holder may see: `vehicles`, `fleets`, `orders`, or `all`. Order ids
 *   are unique within a fleet only, so an order grant names its fleet: `fleet/order` (orderGrant).
 * - An admin token (`role: "admin"`) may see and do everything.
 */
import { SignJWT, jwtVerify, errors as joseErrors } from "jose";

export type Role = "vehicle" | "watch" | "admin";

export interface VehicleClaims {
  role: "vehicle";
  vehicleId: string;
  fleetId: string;
}

export interface WatchClaims {
  role: "watch" | "admin";
  vehicles: readonly string[];
  fleets: readonly string[];
  /** Order grants, each `fleet/order` (see orderGrant). */
  orders: readonly string[];
  /** Sees every vehicle (admin tokens, or a watch token minted with `all`). */
  all: boolean;
  /** May change vehicle status (dispatchers). */
  dispatch: boolean;
}

export type Claims = VehicleClaims | WatchClaims;

export interface TokenKeys {
  secret: string;
  issuer: string;
  audience: string;
}

/** Thrown when a token is missing, malformed, expired, forged or of the wrong kind. */
export class AuthError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AuthError";
  }
}

const ALG = "HS256";
const encoder = new TextEncoder();
const keyCache = new Map<string, Uint8Array>();

function keyOf(secret: string): Uint8Array {
  let key = keyCache.get(secret);
  if (!key) {
    key = encoder.encode(secret);
    keyCache.set(secret, key);
  }
  return key;
}

/**
 * The grant of one order of one fleet, as a watch token lists it and as services match a vehicle's
 * current (fleet, order) against a token. A vehicle claims orders of its own fleet only: the
 * gateway stamps the fleet of its token on each point, so "ORD-1" sent by a vehicle of fleet B is
 * `B/ORD-1`, which a token for `A/ORD-1` does not grant.
 */
export function orderGrant(fleetId: string, orderId: string): string {
  return `${fleetId}/${orderId}`;
}

/** Splits an order grant at its first "/"; undefined when it names no fleet. */
export function parseOrderGrant(grant: string): { fleetId: string; orderId: string } | undefined {
  const slash = grant.indexOf("/");
  if (slash <= 0 || slash === grant.length - 1) return undefined;
  return { fleetId: grant.slice(0, slash), orderId: grant.slice(slash + 1) };
}

function expiry(ttlSeconds: number) {
  return Math.floor(Date.now() / 1000) + ttlSeconds;
}

/** Mints a token that lets one vehicle send its own positions. */
export async function mintVehicleToken(
  keys: TokenKeys,
  vehicleId: string,
  { fleetId = "", ttlSeconds = 30 * 86400 }: { fleetId?: string; ttlSeconds?: number } = {},
): Promise<string> {
  if (!vehicleId) throw new AuthError("vehicle id is empty");
  if (fleetId.includes("/")) throw new AuthError(`fleet id "${fleetId}" holds a "/": order grants use it to separate fleet and order`);
  return new SignJWT({ role: "vehicle", fleet: fleetId })
    .setProtectedHeader({ alg: ALG, typ: "JWT" })
    .setSubject(vehicleId)
    .setIssuer(keys.issuer)
    .setAudience(keys.audience)
    .setIssuedAt()
    .setExpirationTime(expiry(ttlSeconds))
    .sign(keyOf(keys.secret));
}

export interface WatchGrant {
  vehicles?: string[];
  fleets?: string[];
  orders?: string[];
  all?: boolean;
  dispatch?: boolean;
  admin?: boolean;
  subject?: string;
  ttlSeconds?: number;
}

/** Mints a token that lets its holder see the listed vehicles, fleets or orders (or all). */
export async function mintWatchToken(keys: TokenKeys, grant: WatchGrant): Promise<string> {
  const { vehicles = [], fleets = [], orders = [], all = false, dispatch = false, admin = false } = grant;
  if (!all && !admin && vehicles.length + fleets.length + orders.length === 0) {
    throw new AuthError("a watch token must grant vehicles, fleets, orders or all");
  }
  const unscoped = orders.find((o) => parseOrderGrant(o) === undefined);
  if (unscoped !== undefined)
    throw new AuthError(`order grant "${unscoped}" names no fleet: write it "fleet/order" (order ids are unique within a fleet only)`);
  return new SignJWT({ role: admin ? "admin" : "watch", vehicles, fleets, orders, all: all || admin, dispatch: dispatch || admin })
    .setProtectedHeader({ alg: ALG, typ: "JWT" })
    .setSubject(grant.subject ?? "watcher")
    .setIssuer(keys.issuer)
    .setAudience(keys.audience)
    .setIssuedAt()
    .setExpirationTime(expiry(grant.ttlSeconds ?? 86400))
    .sign(keyOf(keys.secret));
}

const stringList = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : []);

/** Verifies a token (without the "Bearer " prefix) and returns its claims; throws AuthError. */
export async function verifyToken(keys: TokenKeys, token: string): Promise<Claims> {
  let payload;
  try {
    ({ payload } = await jwtVerify(token, keyOf(keys.secret), {
      algorithms: [ALG],
      issuer: keys.issuer,
      audience: keys.audience,
      requiredClaims: ["exp", "iss", "aud", "sub"],
    }));
  } catch (cause) {
    if (cause instanceof joseErrors.JWTExpired) throw new AuthError("token expired: mint a new one", { cause });
    if (cause instanceof joseErrors.JWTClaimValidationFailed) {
      throw new AuthError(`token claim "${cause.claim}" is not valid: ${cause.reason}`, { cause });
    }
    if (cause instanceof joseErrors.JOSEAlgNotAllowed) throw new AuthError("token algorithm not allowed: use HS256", { cause });
    throw new AuthError("token is malformed or its signature does not match", { cause });
  }
  if (payload.role === "vehicle") {
    return { role: "vehicle", vehicleId: payload.sub!, fleetId: typeof payload.fleet === "string" ? payload.fleet : "" };
  }
  if (payload.role === "watch" || payload.role === "admin") {
    return {
      role: payload.role,
      vehicles: stringList(payload.vehicles),
      fleets: stringList(payload.fleets),
      // A grant that names no fleet (a token minted before orders were scoped) grants nothing.
      orders: stringList(payload.orders).filter((o) => parseOrderGrant(o) !== undefined),
      all: payload.all === true || payload.role === "admin",
      dispatch: payload.dispatch === true || payload.role === "admin",
    };
  }
  throw new AuthError(`token role "${String(payload.role)}" is unknown`);
}

/**
 * Reads the bearer token from an `authorization` header value and verifies it.
 * Throws AuthError when it is missing or not a bearer token.
 */
export async function verifyBearer(keys: TokenKeys, header: string | null | undefined): Promise<Claims> {
  if (!header) throw new AuthError('missing token: send "authorization: Bearer <token>" (mint one with `fleet token`)');
  const m = /^Bearer\s+(\S+)$/i.exec(header.trim());
  if (!m) throw new AuthError('authorization header must be "Bearer <token>"');
  return verifyToken(keys, m[1]!);
}

/** Token keys of a Config. */
export function tokenKeys(config: { secret: string; issuer: string; audience: string }): TokenKeys {
  return { secret: config.secret, issuer: config.issuer, audience: config.audience };
}
