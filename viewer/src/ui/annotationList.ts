/**
 * The Annotations panel: the shapes of the image (volumes: of the slice shown, or of all slices),
 * filtered by label, author and status; a click zooms the map to the shape and selects it (and
 * on a volume goes to its slice first). Changes waiting to be saved are listed on top, marked
 * unsaved, with Retry and Discard.
 */
import type { AnnotationFeature, AnnotationStatus } from '../api';
import type { PendingSave } from '../map/pendingSaves';
import type { AnnotationFilter } from './annotationFilter';
import { describe, filterAnnotations, filterChoices, NO_FILTER, onSlice, STATUSES, statusOf } from './annotationFilter';
import { el } from './dom';

export interface AnnotationListEvents {
  pick: (feature: AnnotationFeature) => void;
  retry: () => void;
  discard: (key: string) => void;
  /** The "all slices" toggle changed. */
  scopeChanged?: () => void;
}

export class AnnotationList {
  private features: AnnotationFeature[] = [];
  private volume: { slice: number; plane: string } | null = null;
  private filter: AnnotationFilter = { ...NO_FILTER };
  private selected = new Set<string>();
  private readonly items: HTMLUListElement;
  private readonly unsaved: HTMLUListElement;
  private readonly count: HTMLElement;
  private readonly allSlices: HTMLInputElement;
  private readonly allSlicesRow: HTMLElement;
  private readonly selects: Record<'label' | 'author' | 'status', HTMLSelectElement>;

  constructor(
    private readonly root: HTMLElement,
    private readonly events: AnnotationListEvents,
    private readonly colour: (label: string) => string,
  ) {
    this.count = el('span', { className: 'badge', attrs: { id: 'annotation-list-count' } });
    this.allSlices = el('input', { attrs: { type: 'checkbox', id: 'list-all-slices' } });
    this.allSlices.addEventListener('change', () => {
      this.render();
      this.events.scopeChanged?.();
    });
    this.allSlicesRow = el('label', { className: 'field-row list-scope' }, [this.allSlices, 'All slices']);
    const select = (name: 'label' | 'author' | 'status', title: string): HTMLSelectElement => {
      const node = el('select', { className: 'field-input', attrs: { id: `filter-${name}`, 'aria-label': title }, title });
      node.addEventListener('change', () => {
        const value = node.value === '' ? null : node.value;
        this.filter = { ...this.filter, [name]: value } as AnnotationFilter;
        this.render();
      });
      return node;
    };
    this.selects = { label: select('label', 'Label'), author: select('author', 'Author'), status: select('status', 'Status') };
    this.unsaved = el('ul', { className: 'annot-list annot-unsaved', attrs: { id: 'annotation-unsaved' } });
    this.items = el('ul', { className: 'annot-list', attrs: { id: 'annotation-list-items', role: 'listbox', 'aria-label': 'Annotations' } });
    root.replaceChildren(
      el('section', { className: 'control' }, [
        el('h3', { className: 'control-title' }, ['Annotations ', this.count]),
        this.allSlicesRow,
        el('div', { className: 'filter-row' }, [this.selects.label, this.selects.author, this.selects.status]),
        this.unsaved,
        this.items,
      ]),
    );
    root.hidden = true;
  }

  get showsAllSlices(): boolean {
    return this.volume !== null && this.allSlices.checked;
  }

  /** Every annotation of the image; `volume`: the slice shown (null for 2D images). */
  setData(features: AnnotationFeature[], volume: { slice: number; plane: string } | null): void {
    this.features = features;
    this.volume = volume;
    this.root.hidden = false;
    this.allSlicesRow.hidden = volume === null;
    this.fillFilters();
    this.render();
  }

  hide(): void {
    this.root.hidden = true;
  }

  setSelected(ids: string[]): void {
    this.selected = new Set(ids);
    for (const item of this.items.querySelectorAll<HTMLElement>('.annot-item')) {
      item.setAttribute('aria-selected', String(this.selected.has(item.dataset.id ?? '')));
    }
  }

  setPending(pending: PendingSave[]): void {
    this.unsaved.replaceChildren(
      ...pending.map((save) => {
        const retry = el('button', { className: 'btn annot-retry', text: 'Retry', attrs: { type: 'button' } });
        retry.addEventListener('click', () => this.events.retry());
        const discard = el('button', { className: 'btn annot-discard', text: 'Discard', attrs: { type: 'button' } });
        discard.addEventListener('click', () => this.events.discard(save.key));
        const label = save.feature?.properties.label ?? `#${String(save.id ?? '')}`;
        return el('li', { className: 'annot-item is-unsaved', dataset: { key: save.key, op: save.op } }, [
          el('span', { className: 'annot-item-main' }, [
            el('span', { className: 'status-badge status-unsaved', text: 'unsaved' }),
            ` ${save.op} ${label}`,
          ]),
          el('span', { className: 'annot-item-meta', text: `${save.error} · ${save.attempts} attempt${save.attempts === 1 ? '' : 's'}` }),
          el('span', { className: 'field-row' }, [retry, discard]),
        ]);
      }),
    );
    this.unsaved.hidden = pending.length === 0;
  }

  private fillFilters(): void {
    const { labels, authors } = filterChoices(this.features);
    const fill = (node: HTMLSelectElement, any: string, values: readonly string[], current: string | null): void => {
      const options = [el('option', { text: any, attrs: { value: '' } }), ...values.map((v) => el('option', { text: v, attrs: { value: v } }))];
      node.replaceChildren(...options);
      node.value = current !== null && values.includes(current) ? current : '';
    };
    fill(this.selects.label, 'Any label', labels, this.filter.label);
    fill(this.selects.author, 'Any author', authors, this.filter.author);
    fill(this.selects.status, 'Any status', STATUSES, this.filter.status);
    this.filter = {
      label: this.selects.label.value || null,
      author: this.selects.author.value || null,
      status: (this.selects.status.value || null) as AnnotationStatus | null,
    };
  }

  private render(): void {
    const scope = this.showsAllSlices ? null : this.volume;
    const shown = filterAnnotations(
      this.features.filter((f) => onSlice(f, scope)),
      this.filter,
    );
    this.count.textContent = String(shown.length);
    this.count.dataset.count = String(shown.length);
    this.items.replaceChildren(
      ...shown.map((feature) => {
        const p = feature.properties;
        const status = statusOf(feature);
        const swatch = el('span', { className: 'label-swatch', attrs: { 'aria-hidden': 'true' } });
        swatch.style.background = this.colour(p.label);
        const item = el(
          'li',
          {
            className: 'annot-item',
            attrs: { tabindex: '0', role: 'option', 'aria-selected': String(this.selected.has(String(feature.id))) },
            dataset: { id: String(feature.id ?? ''), status, label: p.label, author: p.author ?? '' },
          },
          [
            el('span', { className: 'annot-item-main' }, [swatch, ` ${p.label} `, el('span', { className: `status-badge status-${status}`, text: status })]),
            el('span', { className: 'annot-item-meta', text: `${describe(feature)} · ${p.author ?? '?'}` }),
            p.review?.comment ? el('span', { className: 'annot-item-meta review-comment', text: `“${p.review.comment}” (${p.review.reviewer})` }) : null,
          ],
        );
        const pick = (): void => this.events.pick(feature);
        item.addEventListener('click', pick);
        item.addEventListener('keydown', (event) => {
          if (event.key === 'Enter' || event.key === ' ') {
            event.preventDefault();
            pick();
          }
        });
        return item;
      }),
    );
  }
}
