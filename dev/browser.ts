/**
 * The real browser of the web tests and the web bench: Debian's `chromium`, driven by
 * playwright-core. Nothing is downloaded: playwright-core ships no browser, and the binary is the
 * system's (installed by scripts/ensure-system.sh chromium, as the other system packages are).
 * Headless, with the flags that keep it from phoning home, so a run needs no network.
 *
 * `browserTest` (below) is `test` that runs only where chromium is there or can be installed and
 * otherwise is skipped with the reason in its title: the only reason to skip is a machine where
 * apt-get cannot install it.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { test } from "bun:test";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

/** Where Debian's chromium package puts its binary. */
export const CHROMIUM_PATH = "/usr/bin/chromium";

/**
 * No sandbox (the tests run as root, where Chromium refuses its sandbox), no GPU (there is none;
 * WebGL runs on SwiftShader), and nothing that reaches out: background networking, component
 * updates, sync, QUIC probing and the first-run page.
 */
export const CHROMIUM_ARGS: readonly string[] = Object.freeze([
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
  "--no-first-run",
]);

let checked: string | undefined | null = null;

/**
 * Makes sure chromium is installed (scripts/ensure-system.sh chromium, which uses apt-get when it
 * is missing) and returns undefined, or the reason it is not there and could not be installed.
 * Checked once per process.
 */
export function chromiumUnavailable(executablePath = CHROMIUM_PATH): string | undefined {
  if (existsSync(executablePath)) return undefined;
  if (checked !== null) return checked;
  const script = join(import.meta.dir, "..", "scripts", "ensure-system.sh");
  const r = spawnSync("bash", [script, "chromium"], { encoding: "utf8", stdio: ["ignore", "inherit", "pipe"] });
  const said = (r.stderr ?? "").trim().split("\n").at(-1) ?? "";
  checked = existsSync(executablePath)
    ? undefined
    : `chromium is not installed and could not be (${said || `ensure-system.sh exited ${r.status}`}); install Debian's chromium package`;
  return checked;
}

export interface LaunchedBrowser {
  browser: Browser;
  /** Closes every page and the browser process. */
  close(): Promise<void>;
}

export interface LaunchBrowserOptions {
  executablePath?: string;
  /** Default true; false shows a window (needs a display), for looking at a failing test. */
  headless?: boolean;
  /** Extra Chromium flags, after CHROMIUM_ARGS. */
  args?: string[];
}

/**
 * Launches headless chromium; throws, saying what to install, when it is missing and cannot be
 * installed. Close it when done (an abandoned one is ended with this process by playwright).
 */
export async function launchBrowser({
  executablePath = CHROMIUM_PATH,
  headless = true,
  args = [],
}: LaunchBrowserOptions = {}): Promise<LaunchedBrowser> {
  const missing = chromiumUnavailable(executablePath);
  if (missing) throw new Error(missing);
  const browser = await chromium.launch({ executablePath, headless, args: [...CHROMIUM_ARGS, ...args], timeout: 60_000 });
  return {
    browser,
    async close() {
      await browser.close().catch(() => {});
    },
  };
}

/** A phone-sized screen (an iPhone SE's CSS pixels), for pages that must work on one. */
export const PHONE_VIEWPORT = Object.freeze({ width: 375, height: 667 });

export interface OpenedPage {
  page: Page;
  context: BrowserContext;
  /** Uncaught exceptions and console errors of the page, in order: a test asserts it stays empty. */
  errors: string[];
  /** Every console line of the page ("type: text"), for a failing test's message. */
  console: string[];
  close(): Promise<void>;
}

/**
 * Opens `url` in a fresh context (no cookies or storage shared with other pages) and records the
 * page's errors and console. `viewport` defaults to 1280 × 800.
 */
export async function openPage(
  browser: Browser,
  url: string,
  { viewport = { width: 1280, height: 800 } }: { viewport?: { width: number; height: number } } = {},
): Promise<OpenedPage> {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const errors: string[] = [];
  const lines: string[] = [];
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    lines.push(`${m.type()}: ${m.text()}`);
    if (m.type() === "error") errors.push(`console error: ${m.text()}`);
  });
  await page.goto(url, { waitUntil: "load" });
  return {
    page,
    context,
    errors,
    console: lines,
    async close() {
      await context.close().catch(() => {});
    },
  };
}

/**
 * `test` of a case that needs the browser: it runs where chromium is (or could be installed), and
 * is skipped with the reason in its title where it cannot be installed.
 */
export function browserTest(name: string, fn: () => Promise<void>, timeoutMs?: number): void {
  const missing = chromiumUnavailable();
  test.skipIf(missing !== undefined)(missing ? `${name} (skipped: ${missing})` : name, fn, timeoutMs);
}
