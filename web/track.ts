/// <reference lib="dom" />
/**
 * The customer's tracking page (/track#token=…): the vehicle serving one order, live, with its
 * trail, on a canvas (no tiles: the machine may have no internet). It watches the order and nothing
 * else, through client/live's trackOrder: reconnects, resumes and errors come from there. The words
 * and the frame are in track-view.ts.
 */
import { createLiveClient, trackOrder, type TrackedVehicle } from "../client/live";
import { reachableUrl } from "./map-state";
import { describe, fitFrame, LinkError, parseTrackParams } from "./track-view";

/** The tracker `fleet up` started; replaced by Bun.build's `define` (cli/track-page.ts). */
declare const FLEET_TRACKER_URL: string;

const canvas = document.getElementById("map") as HTMLCanvasElement;
const headline = document.getElementById("headline")!;
const detail = document.getElementById("detail")!;
const connection = document.getElementById("connection")!;
const card = document.getElementById("card")!;

let current: TrackedVehicle | undefined;
let drawPending = false;

function invalidate(): void {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    render();
  });
}

function say(h: string, d: string, tone: string): void {
  headline.textContent = h;
  detail.textContent = d;
  card.dataset.tone = tone;
}

function render(): void {
  const s = current;
  if (!s) return;
  const text = describe(s);
  say(text.headline, text.detail, text.tone);
  connection.textContent = s.connection;
  draw(s);
}

function draw(s: TrackedVehicle): void {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d")!;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const v = s.vehicle;
  if (!v) {
    canvas.setAttribute("aria-label", "map: no vehicle on this order yet");
    delete canvas.dataset.vehicle;
    return;
  }
  const frame = fitFrame([...s.trail, v], w, h);
  // Faint rings every 100 m around the vehicle: a sense of distance without a basemap.
  ctx.strokeStyle = "#e6e9ee";
  ctx.lineWidth = 1;
  for (let r = 100; r / frame.metresPerPixel < Math.max(w, h); r += 100) {
    ctx.beginPath();
    ctx.arc(frame.x(v.lon), frame.y(v.lat), r / frame.metresPerPixel, 0, 2 * Math.PI);
    ctx.stroke();
  }
  const colour = s.online ? "#1a73e8" : "#8a8f98";
  if (s.trail.length > 1) {
    ctx.strokeStyle = colour;
    ctx.globalAlpha = 0.45;
    ctx.lineWidth = 4;
    ctx.lineJoin = "round";
    ctx.beginPath();
    for (const [i, p] of s.trail.entries()) {
      if (i === 0) ctx.moveTo(frame.x(p.lon), frame.y(p.lat));
      else ctx.lineTo(frame.x(p.lon), frame.y(p.lat));
    }
    ctx.stroke();
    ctx.globalAlpha = 1;
  }
  ctx.fillStyle = colour;
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 3;
  ctx.beginPath();
  ctx.arc(frame.x(v.lon), frame.y(v.lat), 9, 0, 2 * Math.PI);
  ctx.fill();
  ctx.stroke();
  // Scale bar: 100 m.
  const bar = 100 / frame.metresPerPixel;
  ctx.fillStyle = "#555";
  ctx.fillRect(12, h - 16, bar, 3);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText("100 m", 12, h - 22);
  // What the canvas shows, in words (screen readers, and the page's tests).
  canvas.setAttribute("aria-label", `map: the vehicle ${s.online ? "" : "(offline) "}at ${v.lat.toFixed(5)}, ${v.lon.toFixed(5)}`);
  canvas.dataset.vehicle = `${v.lat.toFixed(6)},${v.lon.toFixed(6)}`;
  canvas.dataset.trail = String(s.trail.length);
}

function main(): void {
  let params;
  try {
    params = parseTrackParams(location.search, location.hash);
  } catch (e) {
    say("Tracking unavailable", e instanceof LinkError ? e.message : String(e), "error");
    connection.textContent = "not connected";
    return;
  }
  const baseUrl = params.tracker ?? reachableUrl(FLEET_TRACKER_URL, location.hostname);
  const client = createLiveClient({ baseUrl, token: params.token });
  const tracking = trackOrder(client, params.orderId, { trailLength: 200 });
  tracking.subscribe((s) => {
    current = s;
    invalidate();
  });
  current = tracking.getState();
  invalidate();
  // "… s ago" moves on without events.
  setInterval(invalidate, 1000);
  window.addEventListener("resize", invalidate);
  // A new link pasted in starts over with it.
  window.addEventListener("hashchange", () => location.reload());
}

main();
