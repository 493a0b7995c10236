// Patches postgres.js 3.4.9's write scheduler in node_modules, as npm's postinstall and
// scripts/setup.sh run it (idempotent; says what it did). Two upstream bugs, fixes not released:
//  - nextWrite() writes to a socket the connection already dropped: a TypeError thrown from a
//    setImmediate, outside any query, which ends the process (porsager/postgres#1066, #1154, #1208;
//    PRs #1168, #1176, #1209). Here it drops the stale write: that connection's queries were
//    already rejected with CONNECTION_CLOSED, which callers retry, and a reconnect rewrites its
//    startup. lib/pg.ts's guardPostgresClosedSocketWrite stays for an unpatched install, but bun test
//    reports a timer's throw as a failure whatever handler is installed, so tests need this.
//  - terminate() and closed() cancel the scheduled write without forgetting it, so a connection
//    that comes back never schedules one again and its small writes wait forever (the bug reported
//    in LanternOps/breeze#3225). Here both forget it.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// The installed package; a test passes another folder.
const root = process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), "..", "node_modules", "postgres");
const MARK = "fleet patch";
const edits = [
  [
    "  function nextWrite(fn) {\n    const x = socket.write(chunk, fn)",
    `  function nextWrite(fn) {\n    if (!socket) { // ${MARK}: the connection is closed; its queries were rejected already\n      nextWriteTimer !== null && clearImmediate(nextWriteTimer)\n      chunk = nextWriteTimer = null\n      return false\n    }\n    const x = socket.write(chunk, fn)`,
  ],
  ["    clearImmediate(nextWriteTimer)\n    if (socket) {", `    clearImmediate(nextWriteTimer)\n    chunk = nextWriteTimer = null // ${MARK}\n    if (socket) {`],
  ["    incomings = null\n    clearImmediate(nextWriteTimer)\n", `    incomings = null\n    clearImmediate(nextWriteTimer)\n    chunk = nextWriteTimer = null // ${MARK}\n`],
];

if (!existsSync(root)) process.exit(0); // not installed (yet): nothing to patch
const version = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version;
for (const file of ["src/connection.js", "cjs/src/connection.js"]) {
  const path = join(root, file);
  if (!existsSync(path)) continue;
  let text = readFileSync(path, "utf8");
  if (text.includes(MARK)) continue;
  for (const [from, to] of edits) {
    if (!text.includes(from)) {
      console.error(`patch-postgres: postgres ${version} ${file} does not have the code this patch expects; check whether the release fixed nextWrite (porsager/postgres#1208) and update scripts/patch-postgres.mjs`);
      process.exit(1);
    }
    text = text.replace(from, to);
  }
  writeFileSync(path, text);
  console.log(`patch-postgres: patched postgres ${version} ${file} (a write to a closed connection no longer throws from a timer)`);
}
