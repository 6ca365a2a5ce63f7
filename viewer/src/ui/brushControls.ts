/** The Mask section of the Annotate panel: brush and eraser buttons and the brush size. */
import type { BrushMode, BrushTool } from '../map/brushTool';
import { el } from './dom';

const MODES: { mode: BrushMode; name: string; key: string; hint: string }[] = [
  { mode: 'brush', name: 'Brush', key: 'K', hint: 'drag to paint a mask; paints into the selected mask of the same label' },
  { mode: 'eraser', name: 'Eraser', key: 'E', hint: 'select a mask first, then drag to erase from it (or Shift-drag with the brush)' },
];

export class BrushControls {
  private readonly buttons = new Map<BrushMode, HTMLButtonElement>();
  private readonly size: HTMLElement;

  constructor(root: HTMLElement, brush: BrushTool) {
    const group = el('div', { className: 'segmented', attrs: { role: 'group', 'aria-label': 'Mask tool' } });
    for (const { mode, name, key, hint } of MODES) {
      const button = el('button', {
        className: 'segmented-btn',
        text: name,
        title: `${name} (${key}): ${hint}; [ and ] change the size; Esc leaves the tool`,
        attrs: { type: 'button', id: `tool-${mode}`, 'aria-pressed': 'false' },
      });
      button.addEventListener('click', () => brush.setMode(brush.activeMode === mode ? null : mode));
      this.buttons.set(mode, button);
      group.append(button);
    }
    this.size = el('span', { className: 'control-hint', attrs: { id: 'brush-size' } });
    root.append(
      el('section', { className: 'control' }, [
        el('h3', { className: 'control-title', text: 'Mask' }),
        group,
        el('div', { className: 'field-row' }, [this.size]),
      ]),
    );
    this.setMode(null, brush.radius);
  }

  setMode(mode: BrushMode | null, radius: number): void {
    for (const [m, button] of this.buttons) button.setAttribute('aria-pressed', String(m === mode));
    this.size.textContent = `Brush radius ${radius} px ([ / ])`;
    this.size.dataset.radius = String(radius);
  }
}
