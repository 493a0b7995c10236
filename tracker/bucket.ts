/**
 * The state bucket of a vehicle: which `st:<bucket>` hash of Redis holds its record (store.ts's key
 * layout). Apart from store.ts so that point-blob.ts, which writes each point's bucket into
 * newer-wins.lua's argument, and store.ts both take it from here.
 */

/** State buckets. Changing it needs a migration of existing keys: it is part of the data layout (nearby.lua has it too). */
export const BUCKETS = 4096;

/** The state bucket of a vehicle: FNV-1a over the id's UTF-8 bytes (nearby.lua computes the same). */
export function bucketOf(vehicleId: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < vehicleId.length; i++) {
    const c = vehicleId.charCodeAt(i);
    if (c >= 0x80) return bucketOfBytes(Buffer.from(vehicleId, "utf8"));
    h ^= c;
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % BUCKETS;
}

function bucketOfBytes(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (const b of bytes) {
    h ^= b;
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % BUCKETS;
}
