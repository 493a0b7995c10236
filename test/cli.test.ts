/**
 * The `fleet` command as a user runs it: a separate process, its stdout and exit code.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { spawn } from "node:child_process";
import { freePort } from "../dev";

const root = `${import.meta.dir}/..`;
const bun = process.execPath;

function fleet(args: string[], env: Record<string, string> = {}) {
  const proc = Bun.spawnSync([bun, "cli/fleet.ts", ...args], { cwd: root, env: { ...process.env, ...env } });
  return { code: proc.exitCode, stdout: proc.stdout.toString(), stderr: proc.stderr.toString() };
}

describe("fleet cli", () => {
  test("cli - --help explains every command", () => {
    const out = fleet(["--help"]);
    expect(out.code).toBe(0);
    for (const cmd of ["up", "demo", "sim", "token"]) expect(out.stdout).toContain(cmd);
    for (const cmd of ["up", "demo", "sim", "token"]) {
      const sub = fleet([cmd, "--help"]);
      expect(sub.code).toBe(0);
      expect(sub.stdout).toMatch(/usage:\s+fleet/);
    }
  });

  test("cli - an unknown command or flag says so and exits 2", () => {
    expect(fleet(["nope"]).code).toBe(2);
    const bad = fleet(["token", "vehicle", "x", "--bogus"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--bogus");
  });

  test("cli - a wrong environment value names the variable", () => {
    const out = fleet(["token", "vehicle", "x"], { GATEWAY_PORT: "not-a-port" });
    expect(out.code).toBe(2);
    expect(out.stderr).toContain("GATEWAY_PORT");
  });

  test("cli - token vehicle prints one JWT", () => {
    const out = fleet(["token", "vehicle", "truck-1", "--fleet", "north"]);
    expect(out.code).toBe(0);
    expect(out.stdout.trim()).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
  });
});

/**
 * Starts `fleet up` on free ports for every service and waits until its stdout shows `ready`.
 * Rejects at once, with what it printed, when it exits first, and after 45 s otherwise.
 */
/**
 * `fleet up` on free ports. Once more on new ports if a port was taken before it bound it: the
 * ports are picked free here and handed over, and the servers fleet up starts first pick free ports
 * of their own meanwhile, which can be one of these (a clean CI run met it once).
 */
async function fleetUp(args: string[], ready: (stdout: string) => boolean, env: Record<string, string> = {}) {
  try {
    return await fleetUpOnce(args, ready, env);
  } catch (err) {
    if (!(err instanceof Error && /EADDRINUSE/.test(err.message))) throw err;
    console.warn("fleet up: a port was taken before it bound it; once more on new ports");
    return await fleetUpOnce(args, ready, env);
  }
}

async function fleetUpOnce(args: string[], ready: (stdout: string) => boolean, env: Record<string, string> = {}) {
  const ports = {
    GATEWAY_PORT: await freePort(),
    TRACKER_PORT: await freePort(),
    HISTORY_PORT: await freePort(),
    ARCHIVER_PORT: await freePort(),
  };
  const child = spawn(bun, ["cli/fleet.ts", "up", ...args], {
    cwd: root,
    env: {
      ...process.env,
      ...Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)])),
      WEB_PORT: "0",
      NATS_URL: "",
      REDIS_URL: "",
      DATABASE_URL: "",
      S3_ENDPOINT: "",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  let stdout = "";
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const printed = () => `stdout:\n${stdout}\nstderr:\n${stderr}`;
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`fleet up was not ready in 45 s; ${printed()}`)), 45_000);
      exited.then((code) => (clearTimeout(timer), reject(new Error(`fleet up exited (${code}) before it was ready; ${printed()}`))));
      child.stdout!.on("data", (chunk: Buffer) => {
        stdout += chunk.toString();
        if (ready(stdout)) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }
  return { child, exited, stdout, gatewayPort: ports.GATEWAY_PORT };
}

describe("fleet up", () => {
  let child: ReturnType<typeof spawn> | undefined;
  afterEach(() => child?.kill("SIGKILL"));

  test("up - --json names every endpoint, the gateway takes a point, fleet status finds every instance without variables, Ctrl-C stops it all", async () => {
    const up = await fleetUp(["--json"], (out) => out.includes("\n"));
    child = up.child;
    const { exited } = up;
    const port = up.gatewayPort;
    const line = up.stdout.slice(0, up.stdout.indexOf("\n"));
    const endpoints = JSON.parse(line) as Record<string, string | null>;
    expect(Object.keys(endpoints).sort()).toEqual(["archiver", "database", "gateway", "history", "nats", "redis", "s3", "tracker", "web"]);
    expect(endpoints.gateway).toBe(`http://127.0.0.1:${port}`);
    expect(endpoints.web).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect(endpoints.nats).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);
    expect(endpoints.database).toMatch(/^postgres:\/\/.*127\.0\.0\.1:\d+\/fleet$/);

    const health = await fetch(`${endpoints.gateway}/healthz`);
    expect(health.status).toBe(200);

    const token = fleet(["token", "vehicle", "cli-truck"]).stdout.trim();
    const res = await fetch(`${endpoints.gateway}/fleet.v1.IngestService/Publish`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({
        positions: [{ vehicleId: "cli-truck", seq: 1, recordedAt: new Date().toISOString(), lat: 52.5, lon: 13.4, speed: 5 }],
      }),
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { ack: { durableSeq: number } }).ack.durableSeq).toBe(1);

    // fleet status with none of its variables set reads what fleet up recorded in .fleet/status.env.
    const unset = { NATS_URL: "", NATS_MONITOR_URL: "", FLEET_ADMIN_URLS: "", REDIS_URL: "", DATABASE_URL: "" };
    const status = fleet(["status", "--json"], unset);
    expect(status.stderr).toContain(".fleet/status.env");
    const report = JSON.parse(status.stdout) as {
      healthy: boolean;
      problems: string[];
      nodes: { state: string }[];
      services: { name: string; state: string; service?: string }[];
    };
    expect(report.problems).toEqual([]);
    expect(status.code).toBe(0);
    expect(report.nodes.map((n) => n.state)).toEqual(["ok"]);
    expect(report.services.map((s) => [s.name, s.state, s.service])).toEqual([
      ["gateway", "ok", "gateway"],
      ["tracker", "ok", "tracker"],
      ["history", "ok", "history"],
      ["archiver", "ok", "archiver"],
    ]);

    child.kill("SIGINT");
    expect(await exited).toBe(0);
    // Its record goes with it: fleet status no longer finds the stopped instances.
    expect(fleet(["status", "--json", "--timeout", "500ms"], unset).stderr).not.toContain(".fleet/status.env");
    // the stack's servers are gone with it
    await expect(fetch(`${endpoints.gateway}/healthz`)).rejects.toThrow();
    const natsPort = Number(new URL(endpoints.nats!.replace("nats:", "http:")).port);
    const probe = await Bun.connect({ hostname: "127.0.0.1", port: natsPort, socket: { data() {} } }).then(
      (s) => (s.end(), "open"),
      () => "closed",
    );
    expect(probe).toBe("closed");
  }, 60_000);

  test("up - serves the live map page and the bundle Bun.build made, and prints the page URL with a watch token", async () => {
    const webPort = await freePort();
    const up = await fleetUp([], (text) => text.includes("Ctrl-C to stop."), { WEB_PORT: String(webPort) });
    child = up.child;
    const { exited } = up;
    const out = up.stdout;
    // The existing lines stay, the map's join them.
    expect(out).toContain("fleet is up:");
    expect(out).toMatch(/^ {2}gateway {3}http:\/\/127\.0\.0\.1:\d+/m);
    const tracker = /^ {2}tracker {3}(\S+)/m.exec(out)![1]!;
    const page = /^ {2}(http:\/\/127\.0\.0\.1:(\d+)\/#token=([\w.-]+))$/m.exec(out);
    expect(page).not.toBeNull();
    expect(Number(page![2])).toBe(webPort);
    const base = `http://127.0.0.1:${webPort}/`;

    const html = await fetch(base);
    expect(html.status).toBe(200);
    expect(html.headers.get("content-type")).toContain("text/html");
    expect(await html.text()).toContain('<script type="module" src="/app.js">');
    const js = await fetch(`${base}app.js`);
    expect(js.status).toBe(200);
    expect(js.headers.get("content-type")).toContain("javascript");
    // The page's code: app.js, the map worker (it holds the area watch) and the chunks they import.
    const texts = new Map<string, string>([["app.js", await js.text()]]);
    const worker = await fetch(`${base}map-points-worker.js`);
    expect(worker.status).toBe(200);
    texts.set("map-points-worker.js", await worker.text());
    for (const [, text] of texts)
      for (const m of text.matchAll(/from\s*["']\.\/(chunk-[\w-]+\.js)["']/g))
        if (!texts.has(m[1]!)) texts.set(m[1]!, await fetch(`${base}${m[1]}`).then((r) => r.text()));
    const bundle = [...texts.values()].join("\n");
    // Bundled, not the source: no TypeScript imports left, connect-web and the tracker's URL inside.
    expect(bundle).not.toMatch(/^import /m);
    expect(bundle).toContain(".watchArea(");
    expect(bundle).toContain("createConnectTransport");
    expect(texts.get("app.js")).toContain(JSON.stringify(tracker));
    // Only the page and its bundle: no files off the disk.
    for (const path of ["app.ts", "index.ts", "map-state.ts", "../package.json", "%2e%2e/package.json"]) {
      expect((await fetch(`${base}${path}`)).status).toBe(404);
    }

    // The token of the URL is a read-only watch token of every vehicle the tracker takes.
    const token = page![3]!;
    const claims = JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString()) as Record<string, unknown>;
    expect(claims).toMatchObject({ role: "watch", all: true, dispatch: false });
    const counted = await fetch(`${tracker}/fleet.v1.TrackerService/CountByStatus`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: "{}",
    });
    expect(counted.status).toBe(200);

    child.kill("SIGINT");
    expect(await exited).toBe(0);
    await expect(fetch(base)).rejects.toThrow();
  }, 60_000);
});
