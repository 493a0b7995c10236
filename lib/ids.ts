/**
 * What every service asks of the ids it is handed (vehicle, order and fleet ids): no control
 * characters. PostgreSQL's text cannot hold U+0000 (history would refuse the point, again at every
 * retry), NATS subjects and log lines have no place for the others, and none belongs in an id.
 */

/** Index of the first control character (U+0000–U+001F, U+007F) in `s`, or -1. Allocation-free. */
export function controlCharAt(s: string): number {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return i;
  }
  return -1;
}

/** Why `value`, which has a control character, is refused: which character, and where. */
export function controlCharMessage(field: string, value: string): string {
  const at = controlCharAt(value);
  const code = value.charCodeAt(at).toString(16).toUpperCase().padStart(4, "0");
  return `${field} has a control character (U+${code}) at position ${at}: send printable text`;
}
