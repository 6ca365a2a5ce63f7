/** The sidebar's list of images. */
import type { ImageSummary } from '../api';
import { el } from './dom';

export class ImageList {
  private readonly root: HTMLElement;
  private readonly count: HTMLElement | null;
  private readonly onSelect: (id: string) => void;
  private items = new Map<string, HTMLButtonElement>();

  constructor(root: HTMLElement, onSelect: (id: string) => void, count?: HTMLElement) {
    this.root = root;
    this.count = count ?? null;
    this.onSelect = onSelect;
    this.root.setAttribute('role', 'listbox');
    this.root.setAttribute('aria-label', 'Images');
    this.root.addEventListener('keydown', (event) => this.onKey(event));
  }

  render(images: ImageSummary[]): void {
    this.items.clear();
    if (this.count) this.count.textContent = String(images.length);
    const rows = images.map((image) => {
      const button = el(
        'button',
        {
          className: 'image-item',
          title: image.name,
          attrs: { type: 'button', role: 'option', 'aria-selected': 'false', tabindex: '-1' },
          dataset: { imageId: image.id },
        },
        [
          el('span', { className: 'image-item-name', text: image.name }),
          el('span', {
            className: 'image-item-meta',
            text: `${image.width.toLocaleString()} × ${image.height.toLocaleString()} px · ${image.kind}`,
          }),
        ],
      );
      button.addEventListener('click', () => this.onSelect(image.id));
      this.items.set(image.id, button);
      return el('li', {}, [button]);
    });
    if (rows.length === 0) {
      this.root.replaceChildren(
        el('li', { className: 'image-list-empty', text: 'No images in the data folders.' }),
      );
      return;
    }
    this.root.replaceChildren(...rows);
    rows[0]?.querySelector('button')?.setAttribute('tabindex', '0');
  }

  /** A line in place of the list (not signed in, server down). */
  showMessage(text: string): void {
    this.items.clear();
    if (this.count) this.count.textContent = '';
    this.root.replaceChildren(el('li', { className: 'image-list-empty', text }));
  }

  /** Mark one image as selected (null: none). */
  select(id: string | null): void {
    for (const [itemId, button] of this.items) {
      const selected = itemId === id;
      button.setAttribute('aria-selected', String(selected));
      button.setAttribute('tabindex', selected ? '0' : '-1');
      if (selected) button.scrollIntoView({ block: 'nearest' });
    }
  }

  /** Arrow keys move through the list, as in any listbox. */
  private onKey(event: KeyboardEvent): void {
    if (event.key !== 'ArrowDown' && event.key !== 'ArrowUp') return;
    const buttons = [...this.items.values()];
    const index = buttons.indexOf(document.activeElement as HTMLButtonElement);
    const next = buttons[index + (event.key === 'ArrowDown' ? 1 : -1)];
    if (!next) return;
    event.preventDefault();
    next.focus();
    const id = next.dataset.imageId;
    if (id) this.onSelect(id);
  }
}
