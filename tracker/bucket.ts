/**
 * The state bucket of a vehicle: which `st:<bucket>` hash of Redis holds its record (store.ts's key
 * layout). Apart from store.ts so that point-blob.ts, which writes each point's bucket into
 * newer-wins.lua's argument, and store.ts both take it from here.
 */
import { fnv1a, fnv1aUtf8 } from "../lib/fnv1a";

/** State buckets. Changing it needs a migration of existing keys: it is part of the data layout (nearby.lua has it too). */
export const BUCKETS = 4096;

/** The state bucket of a vehicle: FNV-1a over the id's UTF-8 bytes (nearby.lua computes the same). */
export function bucketOf(vehicleId: string): number {
  return fnv1aUtf8(vehicleId) % BUCKETS;
}

/** The state bucket of the vehicle whose id is the UTF-8 `bytes[start, end)`. */
export function bucketOfBytes(bytes: Uint8Array, start: number, end: number): number {
  return fnv1a(bytes, start, end) % BUCKETS;
}
