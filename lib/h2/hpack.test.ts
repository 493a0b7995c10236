// RFC 7541 Appendix C.4 (requests, Huffman, shared dynamic table) and C.6 (responses, Huffman,
// 256-byte table with evictions): decoded by our HpackDecoder.
import { expect, test } from "bun:test";
import { HpackDecoder, HpackError } from "./hpack";

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ""), "hex");
const pairs = (flat: string[]) => flat.reduce<[string, string][]>((a, _, i) => (i % 2 ? a : [...a, [flat[i]!, flat[i + 1]!]]), []);

test("C.4 requests with Huffman", () => {
  const d = new HpackDecoder();
  const out1: string[] = [];
  d.decode(hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"), out1);
  expect(pairs(out1)).toEqual([
    [":method", "GET"],
    [":scheme", "http"],
    [":path", "/"],
    [":authority", "www.example.com"],
  ]);
  const out2: string[] = [];
  d.decode(hex("8286 84be 5886 a8eb 1064 9cbf"), out2);
  expect(pairs(out2)).toEqual([
    [":method", "GET"],
    [":scheme", "http"],
    [":path", "/"],
    [":authority", "www.example.com"],
    ["cache-control", "no-cache"],
  ]);
  const out3: string[] = [];
  d.decode(hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"), out3);
  expect(pairs(out3)).toEqual([
    [":method", "GET"],
    [":scheme", "https"],
    [":path", "/index.html"],
    [":authority", "www.example.com"],
    ["custom-key", "custom-value"],
  ]);
});

test("C.6 responses with Huffman and evictions (table size 256)", () => {
  const d = new HpackDecoder(256);
  const o1: string[] = [];
  d.decode(
    hex(
      "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
    ),
    o1,
  );
  expect(pairs(o1)).toEqual([
    [":status", "302"],
    ["cache-control", "private"],
    ["date", "Mon, 21 Oct 2013 20:13:21 GMT"],
    ["location", "https://www.example.com"],
  ]);
  const o2: string[] = [];
  d.decode(hex("4883 640e ffc1 c0bf"), o2);
  expect(pairs(o2)).toEqual([
    [":status", "307"],
    ["cache-control", "private"],
    ["date", "Mon, 21 Oct 2013 20:13:21 GMT"],
    ["location", "https://www.example.com"],
  ]);
  const o3: string[] = [];
  d.decode(
    hex(
      "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ),
    o3,
  );
  expect(pairs(o3)).toEqual([
    [":status", "200"],
    ["cache-control", "private"],
    ["date", "Mon, 21 Oct 2013 20:13:22 GMT"],
    ["location", "https://www.example.com"],
    ["content-encoding", "gzip"],
    ["set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"],
  ]);
});

test("bad input is refused", () => {
  expect(() => new HpackDecoder().decode(hex("80"), [])).toThrow(HpackError); // index 0
  expect(() => new HpackDecoder().decode(hex("be"), [])).toThrow(HpackError); // empty dynamic table
  expect(() => new HpackDecoder().decode(hex("3fe21f"), [])).toThrow(HpackError); // size update above limit
  expect(() => new HpackDecoder().decode(hex("0081 00"), [])).toThrow(HpackError); // Huffman padding of zeros
});
