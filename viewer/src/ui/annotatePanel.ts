/** The Annotate panel: drawing tools with their keys, the label to draw with, undo and delete. */
import type { Label } from '../api';
import type { AnnotationEditor, Tool } from '../map/annotations';
import { el } from './dom';

export const TOOL_KEYS: Record<string, Tool> = { p: 'polygon', b: 'box', o: 'point', l: 'line' };
const TOOLS: { tool: Tool; name: string; key: string }[] = [
  { tool: 'polygon', name: 'Polygon', key: 'P' },
  { tool: 'box', name: 'Box', key: 'B' },
  { tool: 'point', name: 'Point', key: 'O' },
  { tool: 'line', name: 'Line', key: 'L' },
];

export class AnnotatePanel {
  private readonly buttons = new Map<Tool, HTMLButtonElement>();
  private readonly labelInput: HTMLInputElement;
  private readonly labelList: HTMLDataListElement;
  private readonly swatch: HTMLElement;
  private readonly countText: HTMLElement;

  constructor(
    private readonly root: HTMLElement,
    private readonly editor: AnnotationEditor,
  ) {
    const tools = el('div', { className: 'segmented segmented-4', attrs: { role: 'group', 'aria-label': 'Drawing tool' } });
    for (const { tool, name, key } of TOOLS) {
      const button = el('button', {
        className: 'segmented-btn',
        text: name,
        title: `${name} (${key}); Esc cancels`,
        attrs: { type: 'button', id: `tool-${tool}`, 'aria-pressed': 'false' },
      });
      button.addEventListener('click', () => editor.setTool(editor.activeTool === tool ? null : tool));
      this.buttons.set(tool, button);
      tools.append(button);
    }
    this.labelList = el('datalist', { attrs: { id: 'label-options' } });
    this.labelInput = el('input', {
      className: 'field-input',
      attrs: { id: 'label-input', list: 'label-options', value: editor.label, 'aria-label': 'Label', autocomplete: 'off' },
    });
    this.swatch = el('span', { className: 'label-swatch', attrs: { 'aria-hidden': 'true' } });
    this.labelInput.addEventListener('input', () => {
      editor.label = this.labelInput.value.trim() || 'unlabelled';
      this.paintSwatch();
    });
    const undo = el('button', { className: 'btn', text: 'Undo', title: 'Undo the last change (Ctrl+Z)', attrs: { type: 'button', id: 'annot-undo' } });
    undo.addEventListener('click', () => void editor.undo());
    const del = el('button', { className: 'btn', text: 'Delete', title: 'Delete the selected annotation (Del)', attrs: { type: 'button', id: 'annot-delete' } });
    del.addEventListener('click', () => void editor.deleteSelected());
    this.countText = el('span', { className: 'control-hint annot-count', attrs: { id: 'annot-count' } });
    root.replaceChildren(
      el('section', { className: 'control' }, [
        el('h3', { className: 'control-title', text: 'Annotate' }),
        el('p', { className: 'control-hint', text: 'Click to select and drag vertices to edit; double-click ends a polygon or line.' }),
        tools,
      ]),
      el('section', { className: 'control' }, [
        el('h3', { className: 'control-title', text: 'Label' }),
        el('div', { className: 'field-row' }, [this.swatch, this.labelInput, this.labelList]),
      ]),
      el('section', { className: 'control' }, [el('div', { className: 'field-row' }, [undo, del, this.countText])]),
    );
    this.paintSwatch();
  }

  setVisible(visible: boolean): void {
    this.root.hidden = !visible;
  }

  setLabels(labels: Label[]): void {
    this.labelList.replaceChildren(...labels.map((l) => el('option', { attrs: { value: l.name } })));
    this.labelInput.value = this.editor.label;
    this.paintSwatch();
  }

  setTool(tool: Tool | null): void {
    for (const [t, button] of this.buttons) button.setAttribute('aria-pressed', String(t === tool));
  }

  setCount(count: number): void {
    this.countText.textContent = `${count} shown`;
    this.countText.dataset.count = String(count);
  }

  private paintSwatch(): void {
    this.swatch.style.background = this.editor.colour(this.editor.label);
  }
}
