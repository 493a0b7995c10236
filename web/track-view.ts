/**
 * What the customer's tracking page says and where it draws, without the DOM: the link's parameters
 * and token, the sentences for each state and error, and the map's frame. web/track.ts only draws.
 */
import type { LiveError, TrackedVehicle } from "../client/live";

export interface TrackParams {
  token: string;
  /** The order, `fleet/order`: from #order=, else the one order the token grants. */
  orderId: string;
  /** ?tracker= overrides the tracker the page was built with. */
  tracker: string | undefined;
}

/** What the page can read of a token without verifying it (the tracker verifies it). */
export interface TokenView {
  orders: string[];
  /** ms since the epoch; undefined when the token has no readable `exp`. */
  expiresAtMs: number | undefined;
}

/** Reads a JWT's payload; undefined when it is not a JWT. Nothing is trusted from it but hints. */
export function readToken(token: string): TokenView | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const json = atob(
      part
        .replace(/-/g, "+")
        .replace(/_/g, "/")
        .padEnd(Math.ceil(part.length / 4) * 4, "="),
    );
    const payload = JSON.parse(json) as { orders?: unknown; exp?: unknown };
    const orders = Array.isArray(payload.orders) ? payload.orders.filter((o): o is string => typeof o === "string") : [];
    return { orders, expiresAtMs: typeof payload.exp === "number" ? payload.exp * 1000 : undefined };
  } catch {
    return undefined;
  }
}

/** A problem with the link itself, said to the customer; the page shows nothing else. */
export class LinkError extends Error {
  override readonly name = "LinkError";
}

/** Reads the page's URL: the token (and optionally the order) from the fragment, which is never sent to a server. */
export function parseTrackParams(search: string, hash: string, nowMs = Date.now()): TrackParams {
  const query = new URLSearchParams(search);
  const fragment = new URLSearchParams(hash.replace(/^#/, ""));
  const token = fragment.get("token") ?? "";
  if (!token)
    throw new LinkError("This page needs the tracking link from your order confirmation: the link you opened has no token in it.");
  const claims = readToken(token);
  if (!claims)
    throw new LinkError("This tracking link is damaged: its token cannot be read. Open the whole link from your order confirmation again.");
  if (claims.expiresAtMs !== undefined && claims.expiresAtMs <= nowMs)
    throw new LinkError(`This tracking link expired on ${new Date(claims.expiresAtMs).toUTCString()}. Ask the sender for a new link.`);
  const orderId = fragment.get("order") ?? (claims.orders.length === 1 ? claims.orders[0]! : "");
  if (!orderId)
    throw new LinkError(
      claims.orders.length > 1
        ? "This link is for several orders: add #order=<fleet/order> to say which one to follow."
        : "This link is not for an order: it names no order to follow.",
    );
  return { token, orderId, tracker: query.get("tracker") ?? undefined };
}

/** The customer's words for an error of the live client. */
export function explainError(err: LiveError): string {
  switch (err.code) {
    case "token-expired":
      return "This tracking link has expired. Ask the sender for a new link.";
    case "unauthenticated":
      return "This tracking link is not valid: the server refused its token. Check that you opened the whole link.";
    case "permission-denied":
      return "This tracking link does not give access to this order.";
    case "invalid-argument":
      return `This tracking link names an order the server cannot follow (${err.serverMessage}).`;
    case "unavailable":
    case "resource-exhausted":
      return "The tracking service cannot be reached right now; trying again.";
    default:
      return `Tracking stopped: ${err.message}`;
  }
}

const ago = (ms: number) => (ms < 60_000 ? `${Math.max(0, Math.round(ms / 1000))} s ago` : `${Math.round(ms / 60_000)} min ago`);

/** The headline and the detail line for the tracked order's state. */
export function describe(
  s: TrackedVehicle,
  nowMs = Date.now(),
): { headline: string; detail: string; tone: "ok" | "wait" | "offline" | "error" } {
  if (s.connection === "closed" && s.error) return { headline: "Tracking unavailable", detail: explainError(s.error), tone: "error" };
  if (s.connection === "connecting") return { headline: "Connecting…", detail: "Looking for your delivery.", tone: "wait" };
  const v = s.vehicle;
  const reconnecting = s.connection === "reconnecting" ? " Reconnecting…" : "";
  if (!v) return { headline: "Waiting for a driver", detail: `No vehicle is on this order yet.${reconnecting}`, tone: "wait" };
  const when = v.recordedAtMs ? ` Last position ${ago(nowMs - v.recordedAtMs)}.` : "";
  if (!s.online)
    return {
      headline: "Vehicle offline",
      detail: `The driver's vehicle has not reported for a while; its last known position is shown.${when}${reconnecting}`,
      tone: "offline",
    };
  const speed = v.speed > 0.5 ? ` Moving at ${Math.round(v.speed * 3.6)} km/h.` : " Standing.";
  return { headline: "Your delivery is on its way", detail: `${speed.trim()}${when}${reconnecting}`, tone: "ok" };
}

export interface Frame {
  x(lon: number): number;
  y(lat: number): number;
  /** Metres per pixel, for the scale bar. */
  metresPerPixel: number;
}

/**
 * A frame that holds every point with a margin, at least `minSpanM` across (a standing vehicle is
 * not zoomed to a dot), centred on the points, in a width × height canvas (equirectangular, x scaled
 * by cos(lat) so the trail keeps its shape).
 */
export function fitFrame(
  points: readonly { lat: number; lon: number }[],
  width: number,
  height: number,
  { margin = 24, minSpanM = 400 } = {},
): Frame {
  let minLat = Infinity,
    maxLat = -Infinity,
    minLon = Infinity,
    maxLon = -Infinity;
  for (const p of points) {
    minLat = Math.min(minLat, p.lat);
    maxLat = Math.max(maxLat, p.lat);
    minLon = Math.min(minLon, p.lon);
    maxLon = Math.max(maxLon, p.lon);
  }
  const midLat = (minLat + maxLat) / 2;
  const midLon = (minLon + maxLon) / 2;
  const cos = Math.cos((midLat * Math.PI) / 180);
  const mPerDeg = 111_320;
  const spanXM = Math.max((maxLon - minLon) * cos * mPerDeg, minSpanM);
  const spanYM = Math.max((maxLat - minLat) * mPerDeg, minSpanM);
  const pxPerM = Math.min((width - 2 * margin) / spanXM, (height - 2 * margin) / spanYM);
  return {
    x: (lon: number) => width / 2 + (lon - midLon) * cos * mPerDeg * pxPerM,
    y: (lat: number) => height / 2 - (lat - midLat) * mPerDeg * pxPerM,
    metresPerPixel: 1 / pxPerM,
  };
}
