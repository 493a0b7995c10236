/**
 * The live map page of `fleet up`: web/app.ts bundled for the browser at start-up (nothing built is
 * committed), and a static server that answers only the page and its bundle.
 */
import { mkdirSync, rmSync } from "node:fs";
import { hostname } from "node:os";
import { basename, join } from "node:path";
import { buildTrackPage } from "./track-page";

const webDir = join(import.meta.dir, "..", "web");

export interface WebAppOptions {
  /** The tracker the page watches (its default; the page's ?tracker= overrides it). */
  trackerUrl: string;
  /** The history service the dashboard asks for tracks and replays ("" when none runs; ?history= overrides it). */
  historyUrl?: string;
  /** A MapLibre style URL drawn under the vehicles (WEB_MAP_STYLE); "" draws a graticule and needs no tiles. */
  mapStyle?: string;
  /** Folder that receives index.html and the bundle (emptied first). */
  outDir: string;
  host: string;
  /** 0: a free port. */
  port: number;
}

export interface WebApp {
  /** Base URL of the page, e.g. http://127.0.0.1:50050/ */
  url: string;
  stop(): Promise<void>;
}

export interface BuiltWebApp {
  html: string;
  /** The entry bundle (app.js). */
  js: string;
  /** Every file written, by the path the server answers it on ("/app.js", "/chunk-….js", …). */
  files: Map<string, string>;
  /** Bytes the dashboard loads by default: app.js and the chunks it imports statically (MapLibre, loaded only with a style, excluded). */
  bundleBytes: number;
  /** The chunks app.js imports statically ("/chunk-….js"). */
  staticChunks: string[];
}

/** Bundles web/app.ts for the browser into `outDir`; throws with Bun.build's messages when it fails. */
export async function buildWebApp({
  trackerUrl,
  historyUrl = "",
  mapStyle = "",
  outDir,
}: Pick<WebAppOptions, "trackerUrl" | "historyUrl" | "mapStyle" | "outDir">): Promise<BuiltWebApp> {
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const result = await Bun.build({
    // The vehicles' renderer runs in a worker of its own (web/map-points-worker.ts).
    entrypoints: [join(webDir, "app.ts"), join(webDir, "map-points-worker.ts")],
    outdir: outDir,
    target: "browser",
    // MapLibre (~800 KB) sits in a chunk of its own, fetched only when WEB_MAP_STYLE names a style.
    splitting: true,
    naming: { entry: "[name].js", chunk: "chunk-[hash].js" },
    // Identifiers stay: a stack trace in the browser's console should name connect's functions.
    minify: { whitespace: true, syntax: true, identifiers: false },
    define: {
      FLEET_TRACKER_URL: JSON.stringify(trackerUrl),
      FLEET_HISTORY_URL: JSON.stringify(historyUrl),
      WEB_MAP_STYLE: JSON.stringify(mapStyle),
    },
  });
  if (!result.success) throw new Error(`bundling web/app.ts failed: ${result.logs.map(String).join("; ")}`);
  const html = join(outDir, "index.html");
  await Bun.write(html, Bun.file(join(webDir, "index.html")));
  const files = new Map<string, string>([["/index.html", html]]);
  let bundleBytes = 0;
  for (const out of result.outputs) {
    files.set(`/${basename(out.path)}`, out.path);
    if (out.kind === "entry-point") bundleBytes += out.size;
  }
  // Chunks app.js and the map worker import statically (and what those import) load with them; a
  // dynamic import() (MapLibre) only on demand. Minified, an import need not start a line.
  const staticChunks: string[] = [];
  const scan = async (file: string) => {
    const text = await Bun.file(join(outDir, file)).text();
    for (const m of text.matchAll(/\bimport\s*(?:[^"'();]*?\bfrom\s*)?["']\.\/(chunk-[\w-]+\.js)["']/g)) {
      if (staticChunks.includes(`/${m[1]}`)) continue;
      staticChunks.push(`/${m[1]}`);
      bundleBytes += Bun.file(join(outDir, m[1]!)).size;
      await scan(m[1]!);
    }
  };
  await scan("app.js");
  await scan("map-points-worker.js");
  // MapLibre loads its worker by URL: served beside the bundle (only a style or ?renderer=maplibre fetch it).
  const worker = join(outDir, "maplibre-gl-worker.mjs");
  await Bun.write(worker, Bun.file(join(webDir, "..", "node_modules", "maplibre-gl", "dist", "maplibre-gl-worker.mjs")));
  files.set("/maplibre-gl-worker.mjs", worker);
  return { html, js: join(outDir, "app.js"), files, bundleBytes, staticChunks };
}

/** Builds the page and serves it on host:port. */
export async function startWebApp(options: WebAppOptions): Promise<WebApp> {
  const built = await buildWebApp(options);
  // The customer's tracking page, /track (cli/track-page.ts).
  for (const [path, file] of await buildTrackPage(options)) built.files.set(path, file);
  // Read once: the server answers from memory and never maps a request path onto the disk.
  const bodies = new Map<string, ArrayBuffer>();
  for (const [path, file] of built.files) bodies.set(path, await Bun.file(file).arrayBuffer());
  const headers = (type: string) => ({ "content-type": type, "cache-control": "no-cache", "x-content-type-options": "nosniff" });
  const server = Bun.serve({
    hostname: options.host,
    port: options.port,
    fetch(req) {
      if (req.method !== "GET" && req.method !== "HEAD")
        return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
      const { pathname } = new URL(req.url);
      const body = bodies.get(pathname === "/" ? "/index.html" : pathname);
      if (!body) return new Response("not found\n", { status: 404 });
      const type = /\.m?js$/.test(pathname) ? "text/javascript; charset=utf-8" : "text/html; charset=utf-8";
      return new Response(body, { headers: headers(type) });
    },
  });
  // Bound to every interface (FLEET_HOST=0.0.0.0): the page is offered by the machine's name, as
  // browsers refuse 0.0.0.0; the page then finds the tracker on the host it was loaded from.
  const everywhere = options.host === "0.0.0.0" || options.host === "::";
  const name = everywhere ? hostname() : options.host;
  const host = name.includes(":") ? `[${name}]` : name;
  return {
    url: `http://${host}:${server.port}/`,
    async stop() {
      await server.stop(true);
    },
  };
}

/** The page URL with a watch token in the fragment, which browsers do not send to the server. */
export function pageUrl(base: string, token: string, query: Record<string, string> = {}): string {
  const q = new URLSearchParams(query).toString();
  return `${base}${q ? `?${q}` : ""}#token=${encodeURIComponent(token)}`;
}
