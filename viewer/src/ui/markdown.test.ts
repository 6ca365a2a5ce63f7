import { describe, expect, it } from 'vitest';

import { parseInline, parseMarkdown, safeHref } from './markdown';

describe('instructions markdown', () => {
  it('parses headings, paragraphs, lists, code and rules', () => {
    const blocks = parseMarkdown('# Roads\n\nTrace **every** road\nas a *line*.\n\n- cars\n- `trucks`\n\n1. first\n2. second\n\n```\n<b>raw</b>\n```\n---');
    expect(blocks.map((b) => b.type)).toEqual(['heading', 'paragraph', 'list', 'list', 'code', 'rule']);
    expect(blocks[1]).toEqual({
      type: 'paragraph',
      children: [
        { type: 'text', text: 'Trace ' },
        { type: 'strong', children: [{ type: 'text', text: 'every' }] },
        { type: 'text', text: ' road as a ' },
        { type: 'em', children: [{ type: 'text', text: 'line' }] },
        { type: 'text', text: '.' },
      ],
    });
    expect(blocks[2]).toMatchObject({ type: 'list', ordered: false });
    expect(blocks[3]).toMatchObject({ type: 'list', ordered: true });
    expect(blocks[4]).toEqual({ type: 'code', text: '<b>raw</b>' });
  });

  it('keeps HTML as text: nothing is ever markup', () => {
    const blocks = parseMarkdown('<img src=x onerror=alert(1)> <script>alert(2)</script>');
    expect(blocks).toEqual([
      { type: 'paragraph', children: [{ type: 'text', text: '<img src=x onerror=alert(1)> <script>alert(2)</script>' }] },
    ]);
  });

  it('links only to http(s) and mailto addresses', () => {
    expect(parseInline('see [the guide](https://example.org/guide)')).toEqual([
      { type: 'text', text: 'see ' },
      { type: 'link', href: 'https://example.org/guide', children: [{ type: 'text', text: 'the guide' }] },
    ]);
    // a javascript: link keeps its text and loses the link
    expect(parseInline('[click](javascript:alert(1))')).toEqual([{ type: 'text', text: 'click' }, { type: 'text', text: ')' }]);
    expect(safeHref('JavaScript:alert(1)')).toBeNull();
    expect(safeHref('data:text/html,<b>')).toBeNull();
    expect(safeHref('mailto:lead@example.org')).toBe('mailto:lead@example.org');
  });
});
