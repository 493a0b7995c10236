/** Types of scripts/patch-postgres.mjs, for test/patch-postgres.test.ts and lib/storage/pg.ts. */
/** The edit that makes a COPY FROM the server failed reject (lib/storage/pg.ts looks for it). */
export const COPY_FAILURE_EDIT: readonly [string, string];
/** [what the release has, what the patch makes of it]. */
export const EDITS: readonly (readonly [string, string])[];
/** Applies EDITS to the package at `root`; returns what to print, or throws when the code differs. */
export function patchPostgres(root: string): string[];
