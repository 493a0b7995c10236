/** What the benches' option parsers share. */

/** A `--name` option that must be a positive number; `def` when it was not given. */
export function positiveOption(name: string, raw: string | undefined, def: number): number {
  if (raw === undefined) return def;
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name}: expected a positive number, got "${raw}"`);
  return v;
}
