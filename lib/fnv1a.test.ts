import { expect, test } from "bun:test";
import { fnv1a, fnv1aUtf16, fnv1aUtf8 } from "./fnv1a";

const ascii = (s: string) => new TextEncoder().encode(s);

test("fnv1a - the published 32-bit FNV-1a test vectors", () => {
  // From the FNV reference (draft-eastlake-fnv, test vectors of FNV32a).
  expect(fnv1a(ascii(""))).toBe(0x811c9dc5);
  expect(fnv1a(ascii("a"))).toBe(0xe40c292c);
  expect(fnv1a(ascii("foobar"))).toBe(0xbf9cf968);
});

test("fnv1a - a range of bytes hashes as those bytes alone", () => {
  const bytes = ascii("xxfoobaryy");
  expect(fnv1a(bytes, 2, 8)).toBe(0xbf9cf968);
  expect(fnv1a(bytes, 5, 5)).toBe(0x811c9dc5);
});

test("fnv1a - a string's UTF-8 hash is that of its UTF-8 bytes, ASCII or not", () => {
  for (const s of ["", "a", "foobar", "truck-9", "vélo", "fahrzeug-ü-€-🚚", "x".repeat(300)])
    expect(fnv1aUtf8(s)).toBe(fnv1a(Buffer.from(s, "utf8")));
  expect(fnv1aUtf8("vélo")).toBe(0xf225839c);
});

test("fnv1a - the UTF-16 hash of partitions: UTF-8's for ASCII, its own values (kept as they were) for other text", () => {
  for (const s of ["", "a", "foobar", "truck-9"]) expect(fnv1aUtf16(s)).toBe(fnv1aUtf8(s));
  expect(fnv1aUtf16("vélo")).toBe(0x505c72d1);
  expect(fnv1aUtf16("fahrzeug-ü-€-🚚")).toBe(0x610189a1);
});
