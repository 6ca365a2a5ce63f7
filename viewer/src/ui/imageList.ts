/**
 * The sidebar's list of images: grouped by project, each with its thumbnail (the z = 0 tile,
 * loaded lazily), a kind badge and its size, and a search box that filters by name.
 */
import type { ImageSummary } from '../api';
import { el } from './dom';
import type { ProjectGroup } from './imageCatalog';
import { filterImages, groupByProject, imageKind, KIND_LABELS, thumbnailContentSize, thumbnailUrl } from './imageCatalog';

/** Thumbnail box, CSS px (square; the image is fitted inside). */
const THUMB_PX = 44;

export class ImageList {
  private readonly root: HTMLElement;
  private readonly count: HTMLElement | null;
  private readonly onSelect: (id: string) => void;
  private readonly search: HTMLInputElement;
  private items = new Map<string, HTMLButtonElement>();
  private images: ImageSummary[] = [];
  private projectOrder: string[] = [];
  private selected: string | null = null;

  constructor(root: HTMLElement, onSelect: (id: string) => void, count?: HTMLElement) {
    this.root = root;
    this.count = count ?? null;
    this.onSelect = onSelect;
    this.root.setAttribute('role', 'listbox');
    this.root.setAttribute('aria-label', 'Images');
    this.root.addEventListener('keydown', (event) => this.onKey(event));
    this.search = el('input', {
      className: 'field-input image-search',
      attrs: {
        id: 'image-search',
        type: 'search',
        placeholder: 'Filter by name',
        'aria-label': 'Filter images by name',
        autocomplete: 'off',
        spellcheck: 'false',
      },
    });
    this.search.hidden = true;
    this.search.addEventListener('input', () => this.draw());
    this.search.addEventListener('keydown', (event) => {
      if (event.key === 'ArrowDown') {
        event.preventDefault();
        [...this.items.values()][0]?.focus();
      } else if (event.key === 'Escape' && this.search.value !== '') {
        event.stopPropagation();
        this.search.value = '';
        this.draw();
      }
    });
    this.root.before(this.search);
  }

  /** The images, and the projects in the server's order (groups follow it). */
  render(images: ImageSummary[], projectOrder: string[] = []): void {
    this.images = images;
    this.projectOrder = projectOrder;
    this.search.hidden = images.length === 0;
    this.draw();
  }

  /** The project order once known (the list may be drawn before the projects answer). */
  setProjects(projectOrder: string[]): void {
    this.projectOrder = projectOrder;
    this.draw();
  }

  private draw(): void {
    this.items.clear();
    const shown = filterImages(this.images, this.search.value);
    if (this.count) {
      this.count.textContent =
        shown.length === this.images.length ? String(this.images.length) : `${shown.length} / ${this.images.length}`;
    }
    if (this.images.length === 0) {
      this.root.replaceChildren(el('li', { className: 'image-list-empty', text: 'No images in the data folders.' }));
      return;
    }
    if (shown.length === 0) {
      this.root.replaceChildren(
        el('li', { className: 'image-list-empty', text: `No image name matches “${this.search.value.trim()}”.` }),
      );
      return;
    }
    this.root.replaceChildren(...groupByProject(shown, this.projectOrder).map((group, i) => this.group(group, i)));
    this.select(this.selected, false);
    const focusable = this.selected !== null && this.items.has(this.selected) ? this.selected : shown[0]?.id;
    if (focusable !== undefined) this.items.get(focusable)?.setAttribute('tabindex', '0');
  }

  private group(group: ProjectGroup<ImageSummary>, index: number): HTMLElement {
    const titleId = `image-group-${index}`;
    return el('li', { className: 'image-group', attrs: { role: 'presentation' }, dataset: { project: group.project } }, [
      el('div', { className: 'image-group-title', attrs: { id: titleId } }, [
        el('span', { className: 'image-group-name', text: group.project, title: `Project ${group.project}` }),
        el('span', { className: 'image-group-count', text: String(group.images.length) }),
      ]),
      el(
        'ul',
        { className: 'image-group-items', attrs: { role: 'group', 'aria-labelledby': titleId } },
        group.images.map((image) => el('li', { attrs: { role: 'presentation' } }, [this.item(image)])),
      ),
    ]);
  }

  private item(image: ImageSummary): HTMLButtonElement {
    const kind = imageKind(image);
    const label = KIND_LABELS[kind];
    const button = el(
      'button',
      {
        className: 'image-item',
        title: image.name,
        attrs: { type: 'button', role: 'option', 'aria-selected': 'false', tabindex: '-1' },
        dataset: { imageId: image.id, kind },
      },
      [
        thumbnail(image),
        el('span', { className: 'image-item-text' }, [
          el('span', { className: 'image-item-name', text: image.name }),
          el('span', { className: 'image-item-meta' }, [
            el('span', { className: `kind-badge kind-${kind}`, text: label.short, title: label.long }),
            el('span', {
              className: 'image-item-size',
              text: `${image.width.toLocaleString()} × ${image.height.toLocaleString()} px`,
            }),
          ]),
        ]),
      ],
    );
    button.addEventListener('click', () => this.onSelect(image.id));
    this.items.set(image.id, button);
    return button;
  }

  /** A line in place of the list (not signed in, server down). */
  showMessage(text: string): void {
    this.items.clear();
    this.images = [];
    this.search.hidden = true;
    if (this.count) this.count.textContent = '';
    this.root.replaceChildren(el('li', { className: 'image-list-empty', text }));
  }

  /** Mark one image as selected (null: none). */
  select(id: string | null, scroll = true): void {
    this.selected = id;
    for (const [itemId, button] of this.items) {
      const selected = itemId === id;
      button.setAttribute('aria-selected', String(selected));
      button.setAttribute('tabindex', selected ? '0' : '-1');
      if (selected && scroll) button.scrollIntoView({ block: 'nearest' });
    }
  }

  /** Arrow keys move through the (filtered) list, as in any listbox. */
  private onKey(event: KeyboardEvent): void {
    if (event.key !== 'ArrowDown' && event.key !== 'ArrowUp') return;
    const buttons = [...this.items.values()];
    const index = buttons.indexOf(document.activeElement as HTMLButtonElement);
    if (index === 0 && event.key === 'ArrowUp' && !this.search.hidden) {
      event.preventDefault();
      this.search.focus();
      return;
    }
    const next = buttons[index + (event.key === 'ArrowDown' ? 1 : -1)];
    if (!next) return;
    event.preventDefault();
    next.focus();
    const id = next.dataset.imageId;
    if (id) this.onSelect(id);
  }
}

/**
 * The z = 0 tile, cropped to the part the image covers (the server pads the tile) and fitted in
 * the square box. The browser loads it only when the item scrolls near the view.
 */
function thumbnail(image: ImageSummary): HTMLElement {
  const img = el('img', {
    className: 'image-thumb-img',
    // Low priority: the map's own tiles come first.
    attrs: {
      src: thumbnailUrl(image),
      loading: 'lazy',
      decoding: 'async',
      fetchpriority: 'low',
      alt: '',
      width: String(THUMB_PX),
      height: String(THUMB_PX),
    },
  });
  const crop = el('span', { className: 'image-thumb-crop' }, [img]);
  const box = el('span', { className: 'image-thumb', attrs: { 'aria-hidden': 'true' } }, [crop]);
  img.addEventListener('load', () => {
    const tile = img.naturalWidth;
    const [w, h] = thumbnailContentSize(image.width, image.height, tile);
    if (!(w > 0 && h > 0)) return;
    const scale = THUMB_PX / Math.max(w, h);
    crop.style.width = `${Math.round(w * scale)}px`;
    crop.style.height = `${Math.round(h * scale)}px`;
    img.style.width = `${tile * scale}px`;
    img.style.height = `${img.naturalHeight * scale}px`;
    box.dataset.state = 'loaded';
  });
  img.addEventListener('error', () => {
    box.dataset.state = 'error';
  });
  return box;
}
