/**
 * The customer's tracking page (/track) in a real browser (Debian's chromium through
 * dev/browser.ts) against a gateway and a tracker with real points: it follows its order's vehicle
 * and nothing else, says an expired or wrong link in words, and shows a vehicle gone offline. The
 * page bundles client/live, so this is also that client on Connect-Web in a browser.
 */
import { afterAll, beforeAll, expect } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { startLiveServices, until, type LiveServices, type TestVehicle } from "../client/live/test/services";
import { browserTest, launchBrowser, openPage, PHONE_VIEWPORT, type LaunchedBrowser } from "../dev/browser";
import { mintWatchToken } from "../lib/auth";
import { startWebApp, type WebApp } from "../cli/web";

let svc: LiveServices;
let web: WebApp;
let browser: LaunchedBrowser | undefined;
const outDir = mkdtempSync(join(tmpdir(), "fleet-web-track-"));

beforeAll(async () => {
  svc = await startLiveServices({ trackers: 1 });
  web = await startWebApp({ trackerUrl: svc.trackers[0]!.url, outDir, host: "127.0.0.1", port: 0 });
}, 60_000);
afterAll(async () => {
  await browser?.close();
  await web?.stop();
  await svc?.stop();
  rmSync(outDir, { recursive: true, force: true });
});

async function theBrowser() {
  browser ??= await launchBrowser();
  return browser.browser;
}

const trackUrl = (token: string, extra = "") => `${web.url}track#token=${encodeURIComponent(token)}${extra}`;
const headline = (page: Page) => page.textContent("#headline");
const detail = (page: Page) => page.textContent("#detail");
/** Where the page draws the vehicle ("lat,lon" to 6 places), or undefined while it draws none. */
const drawnAt = (page: Page) => page.evaluate(() => (document.getElementById("map") as HTMLCanvasElement).dataset.vehicle);
const at = (lat: number, lon: number) => `${lat.toFixed(6)},${lon.toFixed(6)}`;

/** Two vehicles of one fleet side by side: `driver` serves `order`, `other` serves another. */
async function twoVehicles(): Promise<{ fleet: string; order: string; driver: TestVehicle; other: TestVehicle }> {
  const fleet = svc.unique("shop");
  const driver = await svc.vehicle(svc.unique("driver"), fleet);
  const other = await svc.vehicle(svc.unique("other"), fleet);
  return { fleet, order: `${fleet}/o-1`, driver, other };
}

browserTest(
  "track page - on a phone-sized screen it follows its order's vehicle, live, and never shows another vehicle",
  async () => {
    const { order, driver, other } = await twoVehicles();
    await other.send({ lat: 52.5203, lon: 13.4003, orderId: "o-2" });
    const opened = await openPage(await theBrowser(), trackUrl(await svc.watchToken({ orders: [order] })), { viewport: PHONE_VIEWPORT });
    const { page } = opened;
    // Every position the page draws, sampled as it goes.
    const drawn = new Set<string>();
    const sample = setInterval(() => {
      drawnAt(page)
        .then((d) => d && drawn.add(d))
        .catch(() => {});
    }, 25);
    try {
      // No vehicle serves the order yet; then the driver takes it (sent now: vehicles go offline
      // after 2 s here, and the browser may take that long to start).
      await waitForCardText(page, "No vehicle is on this order yet");
      await driver.send({ lat: 52.52, lon: 13.4, orderId: "o-1" });
      await page.waitForFunction((want) => document.getElementById("map")?.dataset.vehicle === want, at(52.52, 13.4), { timeout: 10_000 });
      expect(await headline(page)).toBe("Your delivery is on its way");
      expect(await page.textContent("#connection")).toBe("live");
      // Both move; the page follows the driver only.
      for (let k = 1; k <= 5; k++) {
        await driver.send({ lat: 52.52 + k * 2e-4, lon: 13.4 + k * 1e-4, orderId: "o-1" });
        await other.send({ lat: 52.5203 + k * 2e-4, lon: 13.4003, orderId: "o-2" });
      }
      const last = at(52.52 + 5 * 2e-4, 13.4 + 5 * 1e-4);
      await page.waitForFunction((want) => document.getElementById("map")?.dataset.vehicle === want, last, { timeout: 10_000 });
      expect(Number(await page.evaluate(() => document.getElementById("map")!.dataset.trail))).toBeGreaterThan(1);
      const driverPositions = new Set([0, 1, 2, 3, 4, 5].map((k) => at(52.52 + k * 2e-4, 13.4 + k * 1e-4)));
      expect([...drawn].filter((d) => !driverPositions.has(d))).toEqual([]);
      const text = await page.evaluate(() => document.body.textContent + document.getElementById("map")!.getAttribute("aria-label"));
      expect(text).not.toContain(other.id);
      expect(text).not.toContain("52.5213");
      // It fits the phone: no sideways scrolling, and the map has room.
      const fit = await page.evaluate(() => ({
        scrollWidth: document.documentElement.scrollWidth,
        mapHeight: document.getElementById("map")!.clientHeight,
      }));
      expect(fit.scrollWidth).toBeLessThanOrEqual(PHONE_VIEWPORT.width);
      expect(fit.mapHeight).toBeGreaterThan(300);
      expect(opened.errors).toEqual([]);
    } finally {
      clearInterval(sample);
      await opened.close();
    }
  },
  30_000,
);

browserTest(
  "track page - an expired link, a link of another platform and a link for another order are each said in words",
  async () => {
    const { order, driver } = await twoVehicles();
    await driver.send({ lat: 52.53, lon: 13.41, orderId: "o-1" });
    const cases: { token: string; extra?: string; says: string }[] = [
      { token: await svc.watchToken({ orders: [order], ttlSeconds: -60 }), says: "This tracking link expired on" },
      {
        token: await mintWatchToken(
          { secret: "another-platform-secret-of-32-bytes-at-least", issuer: "fleet", audience: "fleet" },
          { orders: [order] },
        ),
        says: "This tracking link is not valid: the server refused its token",
      },
      {
        token: await svc.watchToken({ orders: [`${order}-not-this-one`] }),
        extra: `&order=${encodeURIComponent(order)}`,
        says: "does not give access to this order",
      },
      { token: "", says: "has no token in it" },
    ];
    // One page for all (a new renderer takes a second or two on a busy machine), blank between.
    const opened = await openPage(await theBrowser(), "about:blank", { viewport: PHONE_VIEWPORT });
    try {
      for (const c of cases) {
        await opened.page.goto("about:blank");
        await opened.page.goto(trackUrl(c.token, c.extra ?? ""));
        await waitForCardText(opened.page, c.says);
        expect(await headline(opened.page)).toBe("Tracking unavailable");
        expect(await drawnAt(opened.page)).toBeUndefined();
      }
    } finally {
      await opened.close();
    }
  },
  30_000,
);

browserTest(
  "track page - a vehicle that stops reporting is shown offline",
  async () => {
    const { order, driver } = await twoVehicles();
    const opened = await openPage(await theBrowser(), trackUrl(await svc.watchToken({ orders: [order] })), { viewport: PHONE_VIEWPORT });
    try {
      // Sent once the page is live: the vehicle goes offline 2 s after it.
      await waitForCardText(opened.page, "No vehicle is on this order yet");
      await driver.send({ lat: 52.54, lon: 13.42, orderId: "o-1" });
      await waitForCardText(opened.page, "Moving at");
      // TRACKER_STALE_AFTER is 2 s in these services.
      await until(async () => (await headline(opened.page)) === "Vehicle offline", "the page to say offline", 10_000);
      expect(await detail(opened.page)).toContain("last known position is shown");
      expect(await opened.page.getAttribute("#map", "aria-label")).toContain("(offline)");
      expect(await drawnAt(opened.page)).toBe(at(52.54, 13.42));
    } finally {
      await opened.close();
    }
  },
  30_000,
);

/** Waits until the status card says `text`; fails with what it says instead. */
async function waitForCardText(page: Page, text: string): Promise<void> {
  try {
    await page.waitForFunction((t) => document.getElementById("card")!.textContent.includes(t), text, { timeout: 10_000 });
  } catch {
    throw new Error(`the page (${page.url()}) never said "${text}"; it says: ${(await page.textContent("#card").catch(String)) ?? ""}`);
  }
}
