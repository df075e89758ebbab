/**
 * Escaping for every string that comes from a bundle (pod names, evidence, errors): a bundle is
 * untrusted input, so nothing from it may become markup in HTML or Markdown.
 */

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;' };

/** Text content and attribute values (quoted with either quote). Control characters become U+FFFD. */
export function escapeHtml(v: unknown): string {
  const s = v === null || v === undefined ? '' : String(v);
  return s
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g, '\ufffd')
    .replace(/[&<>"'`]/g, (c) => HTML_ESCAPES[c]!);
}

/** Alias for attribute values, for readability at call sites. */
export const escapeAttr = escapeHtml;

/** JSON that is safe inside a <script> element (no `</script>`, no `<!--`, no U+2028/9). */
export function jsonForScript(v: unknown): string {
  return JSON.stringify(v)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

/**
 * GitHub-flavoured Markdown inline text: control characters removed, newlines become spaces,
 * markup characters backslash-escaped, `<`/`>`/`&` as entities (GitHub renders raw HTML otherwise),
 * `|` escaped so table cells stay cells.
 */
export function escapeMarkdown(v: unknown): string {
  const s = v === null || v === undefined ? '' : String(v);
  return s
    .replace(/\r\n|[\r\n\u2028\u2029]/g, ' ')
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u001f\u007f]/g, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/([\\`*_[\]|~])/g, '\\$1')
    // a leading "-" or "1." would start a list only at line start; cells and bullets are mid-line
    ;
}

/** Inline code span that survives any content (backticks inside get a longer fence). */
export function mdCode(v: unknown): string {
  const s = (v === null || v === undefined ? '' : String(v))
    .replace(/\r\n|[\r\n]/g, ' ')
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u001f\u007f]/g, '')
    .replace(/\|/g, '\u2758');
  const runs = s.match(/`+/g) ?? [];
  const longest = runs.reduce((m, r) => Math.max(m, r.length), 0);
  const fence = '`'.repeat(longest + 1);
  const pad = s.startsWith('`') || s.endsWith('`') ? ' ' : '';
  return `${fence}${pad}${s}${pad}${fence}`;
}
