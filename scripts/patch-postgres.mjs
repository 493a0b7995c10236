// Patches postgres.js 3.4.9's connection.js in node_modules, as npm's postinstall and
// scripts/setup.sh run it (idempotent, edit by edit; says what it did).
// Two upstream bugs, fixes not released:
//  - nextWrite() writes to a socket the connection already dropped: a TypeError thrown from a
//    setImmediate, outside any query, which ends the process (porsager/postgres#1066, #1154, #1208;
//    PRs #1168, #1176, #1209). Here it drops the stale write: that connection's queries were
//    already rejected with CONNECTION_CLOSED, which callers retry, and a reconnect rewrites its
//    startup. lib/storage/pg.ts's guardPostgresClosedSocketWrite stays for an unpatched install, but bun test
//    reports a timer's throw as a failure whatever handler is installed, so tests need this.
//  - terminate() and closed() cancel the scheduled write without forgetting it, so a connection
//    that comes back never schedules one again and its small writes wait forever (the bug reported
//    in LanternOps/breeze#3225). Here both forget it.
// And one cost: a COPY … TO stream got a push per CopyData message, i.e. per row (three subarrays,
// a Readable push and a 'data' event each). Here the whole CopyData messages at hand go to the
// stream as one chunk of their payloads (the same bytes, fewer chunks): the archiver's binary
// export of 1M rows took 20% less CPU (570 -> 455 ms, local PostgreSQL, median of the warm runs).
// COPY BOTH (replication) still gets one push per message, as its reader expects.
// And one more bug: a COPY … FROM STDIN that the server fails (a unique violation, a row for a
// missing partition) after the stream was ended left the stream's end waiting forever: the query
// had resolved with the stream at CopyInResponse, and the error found no stream to fail. Here the
// error ends that wait, so the stream emits it (the writer's fast path COPYs straight into
// `positions` and relies on this; see copyFailuresReported in lib/storage/pg.ts).
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// The installed package; a test passes another folder.
const root = process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), "..", "node_modules", "postgres");
const MARK = "fleet patch";
/** The edit that makes a COPY FROM the server failed reject (lib/storage/pg.ts's copyFailuresReported looks for it). */
export const COPY_FAILURE_EDIT = [
  "  function errored(err) {\n    stream && (stream.destroy(err), stream = null)\n",
  `  function errored(err) {\n    final && (final(err), final = null) // ${MARK}: a COPY FROM the server failed after its stream ended\n    stream && (stream.destroy(err), stream = null)\n`,
];
/** [what the release has, what the patch makes of it]; exported for test/patch-postgres.test.ts. */
export const EDITS = [
  [
    "  function nextWrite(fn) {\n    const x = socket.write(chunk, fn)",
    `  function nextWrite(fn) {\n    if (!socket) { // ${MARK}: the connection is closed; its queries were rejected already\n      nextWriteTimer !== null && clearImmediate(nextWriteTimer)\n      chunk = nextWriteTimer = null\n      return false\n    }\n    const x = socket.write(chunk, fn)`,
  ],
  ["    clearImmediate(nextWriteTimer)\n    if (socket) {", `    clearImmediate(nextWriteTimer)\n    chunk = nextWriteTimer = null // ${MARK}\n    if (socket) {`],
  ["    incomings = null\n    clearImmediate(nextWriteTimer)\n", `    incomings = null\n    clearImmediate(nextWriteTimer)\n    chunk = nextWriteTimer = null // ${MARK}\n`],
  ["  async function closed(hadError) {\n    incoming = Buffer.alloc(0)\n", `  async function closed(hadError) {\n    copyOut = false // ${MARK}\n    incoming = Buffer.alloc(0)\n`],
  ["    , incomings = null\n", `    , incomings = null\n    , copyOut = false // ${MARK}: a COPY … TO is being read (not COPY BOTH: replication reads message by message)\n`],
  [
    "      try {\n        handle(incoming.subarray(0, length + 1))",
    `      if (copyOut && incoming[0] === 100 && copyDataRun()) // ${MARK}: CopyData in runs\n        continue\n\n      try {\n        handle(incoming.subarray(0, length + 1))`,
  ],
  [
    "  function CopyOutResponse() {\n    stream = new Stream.Readable({",
    `  // ${MARK}: the whole CopyData messages at the start of \`incoming\`, pushed to the COPY TO stream
  // as one chunk of their payloads (a push per row was half of a binary export's CPU).
  function copyDataRun() {
    let end = 0
    let size = 0
    while (end + 5 <= incoming.length && incoming[end] === 100) {
      const n = incoming.readUInt32BE(end + 1)
      if (end + 1 + n > incoming.length)
        break
      size += n - 4
      end += 1 + n
    }
    if (end === 0)
      return false
    const out = Buffer.allocUnsafe(size)
    let pos = 0
    for (let at = 0; at < end;) {
      const n = incoming.readUInt32BE(at + 1)
      pos += incoming.copy(out, pos, at + 5, at + 1 + n)
      at += 1 + n
    }
    incoming = incoming.subarray(end)
    remaining = 0
    incomings = null
    stream && (stream.push(out) || socket.pause())
    return true
  }

  function CopyOutResponse() {
    copyOut = true // ${MARK}
    stream = new Stream.Readable({`,
  ],
  ["  function CopyBothResponse() {\n", `  function CopyBothResponse() {\n    copyOut = false // ${MARK}\n`],
  ["  function CopyDone() {\n", `  function CopyDone() {\n    copyOut = false // ${MARK}\n`],
  COPY_FAILURE_EDIT,
];

/** Applies EDITS to the package at `root`; returns what to print, or throws when the code differs. */
export function patchPostgres(root) {
  if (!existsSync(root)) return []; // not installed (yet): nothing to patch
  const version = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version;
  const said = [];
  for (const file of ["src/connection.js", "cjs/src/connection.js"]) {
    const path = join(root, file);
    if (!existsSync(path)) continue;
    let text = readFileSync(path, "utf8");
    let changed = 0;
    for (const [from, to] of EDITS) {
      if (text.includes(to)) continue;
      if (!text.includes(from)) {
        throw new Error(
          `patch-postgres: postgres ${version} ${file} does not have the code this patch expects; check whether the release fixed nextWrite (porsager/postgres#1208) or changed its COPY handling, and update scripts/patch-postgres.mjs`,
        );
      }
      text = text.replace(from, to);
      changed++;
    }
    if (changed === 0) continue;
    writeFileSync(path, text);
    said.push(`patch-postgres: patched postgres ${version} ${file}, ${changed} of ${EDITS.length} edits (a write to a closed connection no longer throws from a timer; COPY TO data comes in runs; a failed COPY FROM is reported)`);
  }
  return said;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    for (const line of patchPostgres(root)) console.log(line);
  } catch (err) {
    console.error(err.message);
    process.exit(1);
  }
}
