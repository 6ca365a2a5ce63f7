/**
 * The Instructions panel: the project's labelling instructions (Markdown from the project API,
 * rendered by ./markdown with DOM nodes only) and the viewer's keyboard shortcuts, each in a
 * collapsible section.
 */
import type { Block, Inline } from './markdown';
import { parseMarkdown } from './markdown';
import { el } from './dom';

/** Every keyboard shortcut of the viewer, for the help list. */
export const SHORTCUTS: readonly [string, string][] = [
  ['P / B / O / L', 'polygon, box, point, polyline tool'],
  ['F', 'freehand polygon (or Shift-drag with the polygon tool)'],
  ['H', 'draw a hole in the selected polygon'],
  ['S', 'snapping to nearby vertices and edges on/off'],
  ['K / E', 'mask brush / eraser (drag; Shift-drag with the brush erases)'],
  ['[ / ]', 'brush: smaller / larger disc'],
  ['W', 'Assist: click inside an object (Shift-click outside it, drag a box) for a proposed outline'],
  ['Enter', 'Assist: accept the proposal (saved with the current label)'],
  ['Esc', 'drop the shape being drawn (Assist: the points and box), leave the tool'],
  ['Del', 'delete the selected annotation'],
  ['Ctrl+Z', 'undo'],
  ['Ctrl+Shift+Z / Ctrl+Y', 'redo'],
  ['drag', 'move the selected shape (drag a vertex to edit it)'],
  ['N / Shift+N', 'review: next / previous submitted annotation'],
  ['A / R', 'review: accept / reject (with the comment)'],
  ['Q', 'Quality panel (reviewers and admins): open / close the automated findings'],
  ['PageUp / PageDown, ↑ / ↓', 'volumes: next / previous slice (Shift: 10)'],
];

function inlineNodes(items: Inline[]): Node[] {
  return items.map((item): Node => {
    switch (item.type) {
      case 'text':
        return document.createTextNode(item.text);
      case 'code':
        return el('code', { text: item.text });
      case 'strong':
        return el('strong', {}, inlineNodes(item.children));
      case 'em':
        return el('em', {}, inlineNodes(item.children));
      case 'link':
        return el('a', { attrs: { href: item.href, target: '_blank', rel: 'noopener noreferrer' } }, inlineNodes(item.children));
    }
  });
}

export function renderMarkdown(blocks: Block[]): Node[] {
  return blocks.map((block): Node => {
    switch (block.type) {
      case 'heading': {
        // Inside the panel, headings start at h4 (the panel's own title is an h3).
        const tag = (['h4', 'h5', 'h6'] as const)[Math.min(2, block.level - 1)] ?? 'h6';
        return el(tag, { className: 'md-heading' }, inlineNodes(block.children));
      }
      case 'paragraph':
        return el('p', {}, inlineNodes(block.children));
      case 'list':
        return el(block.ordered ? 'ol' : 'ul', {}, block.items.map((item) => el('li', {}, inlineNodes(item))));
      case 'code':
        return el('pre', {}, [el('code', { text: block.text })]);
      case 'rule':
        return el('hr');
    }
  });
}

export class InstructionsPanel {
  private readonly body: HTMLElement;

  constructor(private readonly root: HTMLElement) {
    this.body = el('div', { className: 'markdown', attrs: { id: 'instructions-body' } });
    const keys = el(
      'dl',
      { className: 'shortcut-list', attrs: { id: 'shortcut-list' } },
      SHORTCUTS.flatMap(([key, what]) => [el('dt', {}, [el('kbd', { text: key })]), el('dd', { text: what })]),
    );
    root.replaceChildren(
      el('details', { className: 'control collapsible', attrs: { id: 'instructions-details', open: '' } }, [
        el('summary', { className: 'control-title', text: 'Instructions' }),
        this.body,
      ]),
      el('details', { className: 'control collapsible', attrs: { id: 'shortcuts-details' } }, [
        el('summary', { className: 'control-title', text: 'Keyboard shortcuts' }),
        keys,
      ]),
    );
    root.hidden = true;
  }

  /** Show the project's instructions (Markdown); the panel stays for the shortcuts. */
  setInstructions(markdown: string): void {
    const blocks = parseMarkdown(markdown);
    this.body.replaceChildren(
      ...(blocks.length > 0 ? renderMarkdown(blocks) : [el('p', { className: 'control-hint', text: 'This project has no instructions.' })]),
    );
    this.root.hidden = false;
  }

  setVisible(visible: boolean): void {
    this.root.hidden = !visible;
  }
}
