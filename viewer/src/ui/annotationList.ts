/**
 * The Annotations panel: the shapes in the current view (a bbox query of the visible part;
 * volumes: of the slice shown), or with "All" every annotation of the image (every slice), a
 * page of 1,000 at a time from the server with "More". Filtered by label (with its sub-labels),
 * author and status: a filter reloads the list with the listing's own parameters, so every
 * page holds only matches and "More" goes on under the filter. The label choices are the
 * project's labels and those seen; the author choices those seen (annotators cannot list the
 * project's members). At most ROW_CAP rows are in the DOM ("More" draws the next ones first).
 * A click zooms the map to the shape and selects it (and on a volume goes to its slice first).
 * Saves update the rows in place (a row that no longer passes the filter leaves). Changes
 * waiting to be saved are listed on top, marked unsaved, with Retry and Discard.
 */
import type { AnnotationFeature, AnnotationPage, AnnotationStatus, Label, ListingFilter } from '../api';
import type { PendingSave } from '../map/pendingSaves';
import type { AnnotationFilter } from './annotationFilter';
import {
  describe,
  labelChoices,
  listedShapes,
  listingFilter,
  listSummary,
  matches,
  NO_FILTER,
  ROW_CAP,
  seenValues,
  STATUSES,
  statusOf,
  upsertFeature,
  withoutFeature,
} from './annotationFilter';
import { el } from './dom';

/** `view`: the annotations in the visible extent (and slice); `all`: every one of the image. */
export type ListScope = 'view' | 'all';

export interface AnnotationListEvents {
  pick: (feature: AnnotationFeature) => void;
  retry: () => void;
  discard: (key: string) => void;
  /** One page of the annotations in this scope that pass `filter`, after `cursor` (null: the first page). */
  fetchPage: (scope: ListScope, filter: ListingFilter, cursor: string | null, signal: AbortSignal) => Promise<AnnotationPage>;
  error: (title: string, message: string) => void;
}

export class AnnotationList {
  private features: AnnotationFeature[] = [];
  private nextCursor: string | null = null;
  private rowCap = ROW_CAP;
  private loading: AbortController | null = null;
  private filter: AnnotationFilter = { ...NO_FILTER };
  /** The project's labels (for the label choices). */
  private taxonomy: readonly Label[] = [];
  /** Labels and authors seen on the rows of this image (filter choices). */
  private readonly seenLabels = new Set<string>();
  private readonly seenAuthors = new Set<string>();
  private selected = new Set<string>();
  private readonly items: HTMLUListElement;
  private readonly unsaved: HTMLUListElement;
  private readonly count: HTMLElement;
  private readonly all: HTMLInputElement;
  private readonly allText: Text;
  private readonly summary: HTMLElement;
  private readonly more: HTMLButtonElement;
  private readonly selects: Record<'label' | 'author' | 'status', HTMLSelectElement>;

  constructor(
    private readonly root: HTMLElement,
    private readonly events: AnnotationListEvents,
    private readonly colour: (label: string) => string,
  ) {
    this.count = el('span', { className: 'badge', attrs: { id: 'annotation-list-count' } });
    this.all = el('input', { attrs: { type: 'checkbox', id: 'list-all' } });
    this.all.addEventListener('change', () => void this.reload());
    this.allText = document.createTextNode('All of the image');
    const allRow = el('label', { className: 'field-row list-scope', title: 'Unticked: the annotations in view' }, [this.all, this.allText]);
    const select = (name: 'label' | 'author' | 'status', title: string): HTMLSelectElement => {
      const node = el('select', { className: 'field-input', attrs: { id: `filter-${name}`, 'aria-label': title }, title });
      node.addEventListener('change', () => {
        const value = node.value === '' ? null : node.value;
        this.filter = { ...this.filter, [name]: value } as AnnotationFilter;
        void this.reload();
      });
      return node;
    };
    this.selects = { label: select('label', 'Label'), author: select('author', 'Author'), status: select('status', 'Status') };
    this.unsaved = el('ul', { className: 'annot-list annot-unsaved', attrs: { id: 'annotation-unsaved' } });
    this.items = el('ul', { className: 'annot-list', attrs: { id: 'annotation-list-items', role: 'listbox', 'aria-label': 'Annotations' } });
    this.summary = el('span', { className: 'control-hint', attrs: { id: 'annotation-list-summary' } });
    this.more = el('button', {
      className: 'btn',
      text: 'More',
      title: 'Draw the next rows, or load the next page from the server',
      attrs: { type: 'button', id: 'annotation-list-more' },
    });
    this.more.addEventListener('click', () => void this.showMore());
    root.replaceChildren(
      el('section', { className: 'control' }, [
        el('h3', { className: 'control-title' }, ['Annotations ', this.count]),
        allRow,
        el('div', { className: 'filter-row' }, [this.selects.label, this.selects.author, this.selects.status]),
        this.unsaved,
        this.items,
        el('div', { className: 'field-row' }, [this.summary, this.more]),
      ]),
    );
    root.hidden = true;
  }

  get scope(): ListScope {
    return this.all.checked ? 'all' : 'view';
  }

  /** A new image: show the panel ("All slices" on volumes) and load its first page. */
  open(volume: boolean): void {
    this.root.hidden = false;
    this.seenLabels.clear();
    this.seenAuthors.clear();
    this.allText.data = volume ? 'All slices' : 'All of the image';
    void this.reload();
  }

  /** The view (extent or slice) changed: reload the rows if they follow it. */
  viewChanged(): void {
    if (!this.root.hidden && this.scope === 'view') void this.reload();
  }

  /** Load the first page of the scope again (the rows loaded so far are replaced). */
  async reload(): Promise<void> {
    this.loading?.abort();
    const loading = new AbortController();
    this.loading = loading;
    try {
      const page = await this.events.fetchPage(this.scope, listingFilter(this.filter), null, loading.signal);
      if (loading.signal.aborted) return;
      this.features = page.features;
      this.nextCursor = page.nextCursor;
      this.rowCap = ROW_CAP;
      this.fillFilters(page.features);
      this.render();
    } catch (error) {
      if (!loading.signal.aborted) this.events.error('Annotations could not be listed', error instanceof Error ? error.message : String(error));
    } finally {
      if (this.loading === loading) this.loading = null;
    }
  }

  /** "More": draw the next rows already loaded, else load the next page from the server. */
  private async showMore(): Promise<void> {
    if (this.rowCap < listedShapes(this.features).length) {
      this.rowCap += ROW_CAP;
      this.render();
      return;
    }
    const cursor = this.nextCursor;
    if (cursor === null || this.loading) return;
    const loading = new AbortController();
    this.loading = loading;
    this.more.disabled = true;
    try {
      const page = await this.events.fetchPage(this.scope, listingFilter(this.filter), cursor, loading.signal);
      if (loading.signal.aborted) return;
      this.features = [...this.features, ...page.features];
      this.nextCursor = page.nextCursor;
      this.rowCap += ROW_CAP;
      this.fillFilters(page.features);
      this.render();
    } catch (error) {
      if (!loading.signal.aborted) this.events.error('Annotations could not be listed', error instanceof Error ? error.message : String(error));
    } finally {
      if (this.loading === loading) this.loading = null;
      this.more.disabled = false;
    }
  }

  /**
   * A save's answer: update its row (or add it), without asking the server again; if it no
   * longer passes the filter (say a submitted one accepted under "submitted"), drop its row.
   */
  upsert(stored: AnnotationFeature): void {
    if (this.root.hidden) return;
    if (matches(stored, this.filter)) this.features = upsertFeature(this.features, stored);
    else if (stored.id !== undefined) this.features = withoutFeature(this.features, stored.id);
    this.fillFilters([stored]);
    this.render();
  }

  /** A deleted annotation: drop its row. */
  remove(id: number | string): void {
    if (this.root.hidden) return;
    this.features = withoutFeature(this.features, id);
    this.render();
  }

  hide(): void {
    this.loading?.abort();
    this.features = [];
    this.nextCursor = null;
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

  /** The project's labels, offered by the label filter. */
  setLabels(labels: readonly Label[]): void {
    this.taxonomy = labels;
    this.fillFilters();
  }

  /** Fill the filter choices, with the labels and authors of `rows` seen from now on. */
  private fillFilters(rows: AnnotationFeature[] = []): void {
    const seen = seenValues(rows);
    for (const label of seen.labels) this.seenLabels.add(label);
    for (const author of seen.authors) this.seenAuthors.add(author);
    const labels = labelChoices(this.taxonomy, this.seenLabels);
    const authors = [...this.seenAuthors].sort();
    const fill = (node: HTMLSelectElement, any: string, values: readonly string[], current: string | null): void => {
      // A filter chosen stays chosen though no row seen has that value.
      const offered = current !== null && !values.includes(current) ? [...values, current] : values;
      node.replaceChildren(
        el('option', { text: any, attrs: { value: '' } }),
        ...offered.map((v) => el('option', { text: v, attrs: { value: v } })),
      );
      node.value = current ?? '';
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
    const shown = listedShapes(this.features);
    const drawn = shown.slice(0, this.rowCap);
    const more = this.nextCursor !== null;
    this.count.textContent = `${shown.length}${more ? '+' : ''}`;
    this.count.dataset.count = String(shown.length);
    this.summary.textContent = listSummary(drawn.length, shown.length, more);
    this.more.hidden = drawn.length >= shown.length && !more;
    this.items.replaceChildren(
      ...drawn.map((feature) => {
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
