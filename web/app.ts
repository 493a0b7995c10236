/// <reference lib="dom" />
/**
 * The live map page: one WatchArea stream over Connect (HTTP/1.1, fetch) drawn on a canvas.
 * No tiles and no CDN (the machine may have no internet): a projection of the box, a grid with
 * labels, a dot per vehicle. The event handling lives in map-state.ts; this file only connects and draws.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { VehicleStatus } from "../gen/fleet/v1/position_pb";
import { TrackerService } from "../gen/fleet/v1/tracker_pb";
import { createMapState, createProjection, gridSteps, parsePageParams, reachableUrl, type Box, type PageParams } from "./map-state";

/** The tracker `fleet up` started; replaced by Bun.build's `define` (cli/web.ts). */
declare const FLEET_TRACKER_URL: string;

const COLOURS: Record<number, [string, string]> = {
  [VehicleStatus.ACTIVE]: ["#1f77b4", "active"],
  [VehicleStatus.IDLE]: ["#ff7f0e", "idle"],
  [VehicleStatus.ON_DELIVERY]: ["#2ca02c", "on delivery"],
  [VehicleStatus.AVAILABLE]: ["#9467bd", "available"],
  [VehicleStatus.UNSPECIFIED]: ["#17becf", "unspecified"],
};
const OFFLINE_COLOUR = "#b0b0b0";

const canvas = document.getElementById("map") as HTMLCanvasElement;
const statusLine = document.getElementById("status")!;
const errorLine = document.getElementById("error")!;
const legend = document.getElementById("legend")!;

const state = createMapState();
let connection = "connecting";
/** The area drawn; set once the page's parameters are read. */
let shownBox: Box | undefined;
let drawPending = false;

/** Draws on the next animation frame, once however often it is asked for: only when something changed. */
function invalidate(): void {
  if (drawPending || !shownBox) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    draw(shownBox!);
  });
}

function showError(text: string): void {
  errorLine.textContent = text;
  errorLine.hidden = text === "";
  invalidate();
}

function params(): PageParams | undefined {
  try {
    return parsePageParams(location.search, location.hash);
  } catch (e) {
    showError(e instanceof Error ? e.message : String(e));
    return undefined;
  }
}

function draw(box: Box): void {
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
  const p = createProjection(box, w, h);

  ctx.strokeStyle = "#e4e4e4";
  ctx.fillStyle = "#888";
  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  for (const lat of gridSteps(box.minLat, box.maxLat)) {
    const y = p.y(lat);
    ctx.beginPath();
    ctx.moveTo(p.x(box.minLon), y);
    ctx.lineTo(p.x(box.maxLon), y);
    ctx.stroke();
    ctx.fillText(lat.toFixed(3), p.x(box.minLon) - 38, y + 4);
  }
  for (const lon of gridSteps(box.minLon, box.maxLon)) {
    const x = p.x(lon);
    ctx.beginPath();
    ctx.moveTo(x, p.y(box.minLat));
    ctx.lineTo(x, p.y(box.maxLat));
    ctx.stroke();
    ctx.fillText(lon.toFixed(3), x - 14, p.y(box.minLat) + 14);
  }
  ctx.strokeStyle = "#999";
  ctx.strokeRect(p.x(box.minLon), p.y(box.maxLat), p.x(box.maxLon) - p.x(box.minLon), p.y(box.minLat) - p.y(box.maxLat));

  // Offline vehicles first, so live ones are drawn over them.
  const views = [...state.vehicles.values()].sort((a, b) => Number(a.online) - Number(b.online));
  for (const v of views) {
    const colour = v.online ? (COLOURS[v.status]?.[0] ?? COLOURS[VehicleStatus.UNSPECIFIED]![0]) : OFFLINE_COLOUR;
    if (v.trail.length > 1) {
      ctx.strokeStyle = colour;
      ctx.globalAlpha = 0.35;
      ctx.lineWidth = 2;
      ctx.beginPath();
      v.trail.forEach((t, i) => {
        if (i === 0) ctx.moveTo(p.x(t.lon), p.y(t.lat));
        else ctx.lineTo(p.x(t.lon), p.y(t.lat));
      });
      ctx.stroke();
      ctx.globalAlpha = 1;
    }
    ctx.fillStyle = colour;
    ctx.beginPath();
    ctx.arc(p.x(v.lon), p.y(v.lat), 4, 0, 2 * Math.PI);
    ctx.fill();
  }

  const now = Date.now();
  const age = state.lastEventAtMs === undefined ? "–" : `${((now - state.lastEventAtMs) / 1000).toFixed(1)} s ago`;
  const offline = state.vehicles.size - state.onlineCount();
  statusLine.textContent =
    `${connection} · ${state.onlineCount()} vehicles shown${offline ? ` (+${offline} offline)` : ""} · ` +
    `${state.updatesPerSecond(now).toFixed(1)} updates/s · last update ${age} · ${state.coalesced} coalesced`;
}

/** Codes that another try with the same token and area cannot fix: the page stops and says why. */
const PERMANENT = new Set([Code.Unauthenticated, Code.PermissionDenied, Code.InvalidArgument]);

/**
 * Keeps one watch open; on an end or a passing error waits (1 s doubling to 30 s) and opens a new
 * one. A rejected token or area ends it: retrying would only be refused again.
 */
async function watch(p: PageParams): Promise<void> {
  const baseUrl = p.tracker ?? reachableUrl(FLEET_TRACKER_URL, location.hostname);
  const client = createClient(TrackerService, createConnectTransport({ baseUrl, useBinaryFormat: true }));
  const area = { shape: { case: "box" as const, value: p.box } };
  // Failures since the stream was last live: the backoff grows with them, and a live stream resets it.
  let failures = 0;
  for (;;) {
    connection = failures === 0 ? "connecting" : "reconnecting";
    try {
      state.restart();
      invalidate();
      for await (const res of client.watchArea({ area }, { headers: { authorization: `Bearer ${p.token}` } })) {
        state.apply(res.events);
        invalidate();
        if (state.live && connection !== "live") {
          connection = "live";
          failures = 0;
          showError("");
        }
      }
      showError("the tracker ended the watch; reconnecting");
    } catch (e) {
      const err = ConnectError.from(e);
      const hint =
        err.code === Code.Unauthenticated
          ? " (the URL fleet up prints has a fresh one; or fleet token watch --all, then #token=… in the URL)"
          : "";
      if (PERMANENT.has(err.code)) {
        connection = "stopped";
        showError(`${Code[err.code]}: ${err.rawMessage}${hint}; not retrying: change the URL to try again`);
        return;
      }
      showError(`${Code[err.code]}: ${err.rawMessage}${hint}`);
    }
    const delay = Math.min(30_000, 1000 * 2 ** Math.min(failures++, 5)) * (0.8 + Math.random() * 0.4);
    connection = `disconnected, retrying in ${(delay / 1000).toFixed(0)} s`;
    invalidate();
    await new Promise((r) => setTimeout(r, delay));
  }
}

function main(): void {
  legend.replaceChildren(
    ...[...Object.values(COLOURS), [OFFLINE_COLOUR, "offline"] as [string, string]].map(([colour, label]) => {
      const item = document.createElement("span");
      const dot = document.createElement("i");
      dot.style.background = colour;
      item.append(dot, label);
      return item;
    }),
  );
  const p = params();
  if (!p) return;
  document.getElementById("box")!.textContent = `${p.box.minLat},${p.box.minLon} – ${p.box.maxLat},${p.box.maxLon}`;
  if (!p.token) {
    showError("no token: open the URL fleet up printed, or add #token=<watch token> (fleet token watch --all)");
    return;
  }
  shownBox = p.box;
  invalidate();
  // Once a second even without events: the status line's "last update … ago", and offline vehicles pruned.
  setInterval(() => {
    state.prune();
    invalidate();
  }, 1000);
  window.addEventListener("resize", invalidate);
  // A changed fragment (a fresh token pasted in) starts over with it.
  window.addEventListener("hashchange", () => location.reload());
  void watch(p);
}

main();
