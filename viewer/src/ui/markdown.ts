/**
 * A small, safe subset of Markdown for the labelling instructions: headings, paragraphs, bullet
 * and numbered lists, fenced code, rules, and inline **bold**, *italic*, `code` and
 * [links](https://...). It parses to a tree and the page builds DOM nodes from it with
 * textContent only: no HTML string from the project ever reaches innerHTML, so there is nothing
 * to sanitise, and links are kept only for http(s) and mailto addresses.
 */

export type Inline =
  | { type: 'text'; text: string }
  | { type: 'strong' | 'em'; children: Inline[] }
  | { type: 'code'; text: string }
  | { type: 'link'; href: string; children: Inline[] };

export type Block =
  | { type: 'heading'; level: number; children: Inline[] }
  | { type: 'paragraph'; children: Inline[] }
  | { type: 'list'; ordered: boolean; items: Inline[][] }
  | { type: 'code'; text: string }
  | { type: 'rule' };

const SAFE_LINK = /^(https?:\/\/|mailto:)/i;

/** `href` if it is an address a link may point to, else null (javascript:, data:, ...). */
export function safeHref(href: string): string | null {
  const trimmed = href.trim();
  return SAFE_LINK.test(trimmed) ? trimmed : null;
}

// One inline token at a time, earliest match first: code, link, bold, italic.
const INLINE = /`([^`]+)`|\[([^\]]+)\]\(([^)\s]+)\)|\*\*(.+?)\*\*|__(.+?)__|\*([^*]+)\*|_([^_]+)_/;

export function parseInline(text: string): Inline[] {
  const out: Inline[] = [];
  let rest = text;
  while (rest.length > 0) {
    const m = INLINE.exec(rest);
    if (!m) {
      out.push({ type: 'text', text: rest });
      break;
    }
    if (m.index > 0) out.push({ type: 'text', text: rest.slice(0, m.index) });
    const [whole, code, linkText, href, bold1, bold2, em1, em2] = m;
    if (code !== undefined) {
      out.push({ type: 'code', text: code });
    } else if (linkText !== undefined && href !== undefined) {
      const safe = safeHref(href);
      const children = parseInline(linkText);
      if (safe) out.push({ type: 'link', href: safe, children });
      else out.push(...children);
    } else if ((bold1 ?? bold2) !== undefined) {
      out.push({ type: 'strong', children: parseInline(bold1 ?? bold2 ?? '') });
    } else {
      out.push({ type: 'em', children: parseInline(em1 ?? em2 ?? '') });
    }
    rest = rest.slice(m.index + whole.length);
  }
  return out;
}

export function parseMarkdown(source: string): Block[] {
  const lines = source.replace(/\r\n?/g, '\n').split('\n');
  const blocks: Block[] = [];
  let paragraph: string[] = [];
  // (a cast: TypeScript would otherwise narrow it to null, not seeing flush() assign it)
  let list = null as { ordered: boolean; items: Inline[][] } | null;
  const flush = (): void => {
    if (paragraph.length > 0) blocks.push({ type: 'paragraph', children: parseInline(paragraph.join(' ')) });
    paragraph = [];
    if (list) blocks.push({ type: 'list', ...list });
    list = null;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? '';
    if (/^\s*```/.test(line)) {
      flush();
      const code: string[] = [];
      for (i++; i < lines.length && !/^\s*```/.test(lines[i] ?? ''); i++) code.push(lines[i] ?? '');
      blocks.push({ type: 'code', text: code.join('\n') });
      continue;
    }
    const heading = /^(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
    const bullet = /^\s*[-*+]\s+(.*)$/.exec(line);
    const numbered = /^\s*\d+[.)]\s+(.*)$/.exec(line);
    if (line.trim() === '') {
      flush();
    } else if (heading) {
      flush();
      blocks.push({ type: 'heading', level: heading[1]?.length ?? 1, children: parseInline(heading[2] ?? '') });
    } else if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
      flush();
      blocks.push({ type: 'rule' });
    } else if (bullet || numbered) {
      const ordered = !bullet;
      if (paragraph.length > 0 || (list && list.ordered !== ordered)) flush();
      list ??= { ordered, items: [] };
      list.items.push(parseInline((bullet ?? numbered)?.[1] ?? ''));
    } else if (list && /^\s+\S/.test(line)) {
      // a continuation line of the last list item
      const items = list.items;
      const last = items[items.length - 1];
      if (last) last.push({ type: 'text', text: ' ' }, ...parseInline(line.trim()));
    } else {
      if (list) flush();
      paragraph.push(line.trim());
    }
  }
  flush();
  return blocks;
}
