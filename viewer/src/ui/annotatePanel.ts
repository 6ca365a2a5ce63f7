/** The Annotate panel: drawing tools with their keys, the label to draw with, undo/redo, delete,
 * snapping and submitting drafts for review. */
import type { Label } from '../api';
import type { AnnotationEditor, Tool } from '../map/annotations';
import { el } from './dom';

export const TOOL_KEYS: Record<string, Tool> = { p: 'polygon', f: 'freehand', b: 'box', o: 'point', l: 'line', h: 'hole' };
const TOOLS: { tool: Tool; name: string; key: string; hint: string }[] = [
  { tool: 'polygon', name: 'Polygon', key: 'P', hint: 'click the vertices, double-click or click the first to close; Shift-drag draws freehand' },
  { tool: 'freehand', name: 'Freehand', key: 'F', hint: 'press and drag round the outline' },
  { tool: 'box', name: 'Box', key: 'B', hint: 'click two opposite corners' },
  { tool: 'point', name: 'Point', key: 'O', hint: 'click' },
  { tool: 'line', name: 'Line', key: 'L', hint: 'click the vertices, double-click ends it' },
  { tool: 'hole', name: 'Hole', key: 'H', hint: 'select a polygon first, then draw the hole inside it' },
];

export class AnnotatePanel {
  private readonly buttons = new Map<Tool, HTMLButtonElement>();
  private readonly labelInput: HTMLInputElement;
  private readonly labelList: HTMLDataListElement;
  private readonly swatch: HTMLElement;
  private readonly countText: HTMLElement;
  private readonly snapButton: HTMLButtonElement;

  constructor(
    private readonly root: HTMLElement,
    private readonly editor: AnnotationEditor,
    onSubmit: () => void,
  ) {
    const tools = el('div', { className: 'segmented segmented-3', attrs: { role: 'group', 'aria-label': 'Drawing tool' } });
    for (const { tool, name, key, hint } of TOOLS) {
      const button = el('button', {
        className: 'segmented-btn',
        text: name,
        title: `${name} (${key}): ${hint}; Esc cancels`,
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
    const redo = el('button', { className: 'btn', text: 'Redo', title: 'Redo what was undone (Ctrl+Shift+Z or Ctrl+Y)', attrs: { type: 'button', id: 'annot-redo' } });
    redo.addEventListener('click', () => void editor.redo());
    const del = el('button', { className: 'btn', text: 'Delete', title: 'Delete the selected annotation (Del)', attrs: { type: 'button', id: 'annot-delete' } });
    del.addEventListener('click', () => void editor.deleteSelected());
    this.snapButton = el('button', {
      className: 'btn',
      text: 'Snap',
      title: 'Snap to the vertices and edges of nearby shapes (S)',
      attrs: { type: 'button', id: 'annot-snap', 'aria-pressed': String(editor.snapping) },
    });
    this.snapButton.addEventListener('click', () => editor.setSnapping(!editor.snapping));
    const submit = el('button', {
      className: 'btn btn-primary',
      text: 'Submit drafts',
      title: 'Send your draft annotations of this image for review',
      attrs: { type: 'button', id: 'annot-submit' },
    });
    submit.addEventListener('click', () => onSubmit());
    this.countText = el('span', { className: 'control-hint annot-count', attrs: { id: 'annot-count' } });
    root.replaceChildren(
      el('section', { className: 'control' }, [
        el('h3', { className: 'control-title', text: 'Annotate' }),
        el('p', {
          className: 'control-hint',
          text: 'Click to select; drag a vertex to edit it, or the shape to move it; double-click ends a polygon or line.',
        }),
        tools,
      ]),
      el('section', { className: 'control' }, [
        el('h3', { className: 'control-title', text: 'Label' }),
        el('div', { className: 'field-row' }, [this.swatch, this.labelInput, this.labelList]),
      ]),
      el('section', { className: 'control' }, [
        el('div', { className: 'field-row annot-actions' }, [undo, redo, del, this.snapButton]),
        el('div', { className: 'field-row' }, [submit, this.countText]),
      ]),
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

  setSnapping(on: boolean): void {
    this.snapButton.setAttribute('aria-pressed', String(on));
  }

  setCount(count: number): void {
    this.countText.textContent = `${count} shown`;
    this.countText.dataset.count = String(count);
  }

  private paintSwatch(): void {
    this.swatch.style.background = this.editor.colour(this.editor.label);
  }
}
