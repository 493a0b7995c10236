/**
 * The customer's tracking page (/track): web/track.ts bundled for the browser with the live client
 * (client/live), beside the dashboard's bundle, served by cli/web.ts.
 */
import { join } from "node:path";

const webDir = join(import.meta.dir, "..", "web");

/**
 * Bundles web/track.ts into `outDir` as track.js and copies track.html there; returns the files by
 * the path the server answers them on. Throws with Bun.build's messages when it fails.
 */
export async function buildTrackPage({ trackerUrl, outDir }: { trackerUrl: string; outDir: string }): Promise<Map<string, string>> {
  const result = await Bun.build({
    entrypoints: [join(webDir, "track.ts")],
    outdir: outDir,
    target: "browser",
    naming: "track.js",
    // A phone on a slow network loads it: minified fully.
    minify: true,
    define: { FLEET_TRACKER_URL: JSON.stringify(trackerUrl) },
  });
  if (!result.success) throw new Error(`bundling web/track.ts failed: ${result.logs.map(String).join("; ")}`);
  const html = join(outDir, "track.html");
  await Bun.write(html, Bun.file(join(webDir, "track.html")));
  return new Map([
    ["/track", html],
    ["/track.js", join(outDir, "track.js")],
  ]);
}
