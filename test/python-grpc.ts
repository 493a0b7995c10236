/**
 * Python's grpcio for tests that need a gRPC client of another language and implementation (gRPC's
 * C core): installs Debian's python3-grpcio and python3-grpc-tools when missing (as the servers are)
 * and generates the stubs of proto/ into a temporary folder.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");

export interface PythonGrpc {
  /** Debian's python3, where apt installs grpcio. */
  python: string;
  /** Folder of the generated `fleet.v1` stubs (put it first on sys.path). */
  stubs: string;
  /** Runs a script of test/python/ with arguments; resolves its JSON lines, throws on a failed exit. */
  run(script: string, args: string[]): Promise<Record<string, unknown>[]>;
  remove(): void;
}

export function pythonGrpc(): PythonGrpc {
  const ensured = spawnSync("bash", [join(ROOT, "scripts", "ensure-system.sh"), "python-grpc"], { stdio: ["ignore", 2, 2] });
  if (ensured.status !== 0) throw new Error("Python's grpcio is missing and could not be installed (see the ensure-system lines above)");
  // Looked up after the install, which may have brought it; a python3 earlier on PATH may be another one.
  const python = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  const stubs = mkdtempSync(join(tmpdir(), "fleet-py-stubs-"));
  const protos = readdirSync(join(ROOT, "proto", "fleet", "v1")).map((f) => `fleet/v1/${f}`);
  const gen = spawnSync(
    python,
    ["-m", "grpc_tools.protoc", "-I", join(ROOT, "proto"), `--python_out=${stubs}`, `--grpc_python_out=${stubs}`, ...protos],
    { encoding: "utf8" },
  );
  if (gen.status !== 0) throw new Error(`grpc_tools.protoc failed: ${gen.stderr}`);
  return {
    python,
    stubs,
    async run(script, args) {
      // Asynchronous: the servers it talks to may answer from this process.
      const proc = Bun.spawn([python, join(ROOT, "test", "python", script), stubs, ...args], { stdout: "pipe", stderr: "pipe" });
      const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
      if (code !== 0) throw new Error(`${script} failed (exit ${code}): ${err}\n${out}`);
      return out
        .trim()
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    remove: () => rmSync(stubs, { recursive: true, force: true }),
  };
}
