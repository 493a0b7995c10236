/** Types of scripts/patch-postgres.mjs, for test/patch-postgres.test.ts. */
/** [what the release has, what the patch makes of it]. */
export const EDITS: readonly (readonly [string, string])[];
/** Applies EDITS to the package at `root`; returns what to print, or throws when the code differs. */
export function patchPostgres(root: string): string[];
