/**
 * The tracking page's link reading and its words, without a browser (the page itself runs in
 * Chromium in test/web-track.test.ts).
 */
import { expect, test } from "bun:test";
import { LiveError } from "../client/live";
import { mintWatchToken } from "../lib/auth";
import { describe, fitFrame, LinkError, parseTrackParams } from "./track-view";

const keys = { secret: "track-view-test-secret-of-at-least-32-bytes", issuer: "fleet", audience: "fleet" };

test("track view - the order comes from the token when it grants one, from #order= otherwise", async () => {
  const one = await mintWatchToken(keys, { orders: ["north/o-1"] });
  expect(parseTrackParams("", `#token=${one}`)).toEqual({ token: one, orderId: "north/o-1", tracker: undefined });
  const two = await mintWatchToken(keys, { orders: ["north/o-1", "north/o-2"] });
  expect(() => parseTrackParams("", `#token=${two}`)).toThrow("add #order=");
  expect(parseTrackParams("?tracker=http://t:1", `#token=${two}&order=north/o-2`).orderId).toBe("north/o-2");
});

test("track view - a missing, unreadable or expired link is said in words before any connection", async () => {
  expect(() => parseTrackParams("", "")).toThrow(LinkError);
  expect(() => parseTrackParams("", "#token=not-a-jwt")).toThrow("damaged");
  const expired = await mintWatchToken(keys, { orders: ["north/o-1"], ttlSeconds: -5 });
  expect(() => parseTrackParams("", `#token=${expired}`)).toThrow("expired on");
});

test("track view - offline and errors are plain sentences", () => {
  const vehicle = {
    id: "v",
    fleetId: "f",
    orderId: "o-1",
    status: 0,
    seq: 3,
    lat: 52,
    lon: 13,
    speed: 0,
    heading: 0,
    accuracy: 5,
    recordedAtMs: 1_000,
    lastSeenMs: 1_000,
    online: false,
  };
  expect(describe({ vehicle, trail: [], online: false, connection: "live", error: undefined }, 31_000)).toMatchObject({
    headline: "Vehicle offline",
    tone: "offline",
  });
  const closed = describe({
    vehicle: undefined,
    trail: [],
    online: false,
    connection: "closed",
    error: new LiveError("token-expired", "x"),
  });
  expect(closed.detail).toBe("This tracking link has expired. Ask the sender for a new link.");
  // A standing vehicle is framed at least 400 m across, centred.
  const frame = fitFrame([{ lat: 52, lon: 13 }], 400, 400, { margin: 0 });
  expect(frame.x(13)).toBe(200);
  expect(frame.metresPerPixel).toBeCloseTo(1, 5);
});
