/**
 * The live map page of `fleet up`: web/app.ts bundled for the browser at start-up (nothing built is
 * committed), and a static server that answers only the page and its bundle.
 */
import { mkdirSync, rmSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { buildTrackPage } from "./track-page";

const webDir = join(import.meta.dir, "..", "web");

export interface WebAppOptions {
  /** The tracker the page watches (its default; the page's ?tracker= overrides it). */
  trackerUrl: string;
  /** Folder that receives index.html and app.js (emptied first). */
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

/** Bundles web/app.ts for the browser into `outDir`; throws with Bun.build's messages when it fails. */
export async function buildWebApp({
  trackerUrl,
  outDir,
}: Pick<WebAppOptions, "trackerUrl" | "outDir">): Promise<{ html: string; js: string }> {
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const result = await Bun.build({
    entrypoints: [join(webDir, "app.ts")],
    outdir: outDir,
    target: "browser",
    naming: "app.js",
    // Identifiers stay: a stack trace in the browser's console should name connect's functions.
    minify: { whitespace: true, syntax: true, identifiers: false },
    define: { FLEET_TRACKER_URL: JSON.stringify(trackerUrl) },
  });
  if (!result.success) throw new Error(`bundling web/app.ts failed: ${result.logs.map(String).join("; ")}`);
  const html = join(outDir, "index.html");
  await Bun.write(html, Bun.file(join(webDir, "index.html")));
  return { html, js: join(outDir, "app.js") };
}

/** Builds the page and serves it on host:port. */
export async function startWebApp(options: WebAppOptions): Promise<WebApp> {
  const files = await buildWebApp(options);
  // Read once: the server answers from memory and never maps a request path onto the disk.
  const html = await Bun.file(files.html).arrayBuffer();
  const js = await Bun.file(files.js).arrayBuffer();
  // The customer's tracking page, /track (cli/track-page.ts).
  const track = new Map<string, ArrayBuffer>();
  for (const [path, file] of await buildTrackPage(options)) track.set(path, await Bun.file(file).arrayBuffer());
  const headers = (type: string) => ({ "content-type": type, "cache-control": "no-cache", "x-content-type-options": "nosniff" });
  const server = Bun.serve({
    hostname: options.host,
    port: options.port,
    fetch(req) {
      if (req.method !== "GET" && req.method !== "HEAD")
        return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
      const { pathname } = new URL(req.url);
      if (pathname === "/" || pathname === "/index.html") return new Response(html, { headers: headers("text/html; charset=utf-8") });
      if (pathname === "/app.js") return new Response(js, { headers: headers("text/javascript; charset=utf-8") });
      const page = track.get(pathname);
      if (page)
        return new Response(page, {
          headers: headers(pathname.endsWith(".js") ? "text/javascript; charset=utf-8" : "text/html; charset=utf-8"),
        });
      return new Response("not found\n", { status: 404 });
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
