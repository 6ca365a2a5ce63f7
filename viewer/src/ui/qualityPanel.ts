/**
 * The Quality panel (reviewers and admins): the automated findings of the image shown, from
 * `GET /projects/{project}/checks?image=…` (see ./quality). Counts per severity and code, a code
 * and a severity filter (sent to the server), the findings as rows (severity, code, message,
 * annotation id, label, author) a page at a time with "More" (`next_cursor`), and Re-check. A
 * row click zooms to the finding and selects its annotation (volumes: its slice first). While
 * the panel is open, edits and deletes refresh it (debounced); the server caches each image's
 * findings until it changes, so asking again is cheap. Q opens and closes it.
 */
import type { ChecksAnswer, Finding, Severity } from './quality';
import { checksParams, codeChoices, countsSummary, findingKey, SEVERITIES } from './quality';
import { el } from './dom';

/** Findings per page. */
const PAGE = 200;
/** After an edit, refresh this long after the last one (ms). */
const REFRESH_MS = 800;

export interface QualityEvents {
  /** One page of the checks (the project and image are the caller's). */
  fetchPage: (params: URLSearchParams, signal: AbortSignal) => Promise<ChecksAnswer>;
  /** Show this finding (slice, zoom, select). */
  show: (finding: Finding) => void;
  error: (title: string, message: string) => void;
}

export class QualityPanel {
  private image: string | null = null;
  private allowed = false;
  private open = false;
  private findings: Finding[] = [];
  private answer: ChecksAnswer | null = null;
  private code: string | null = null;
  private severity: Severity | null = null;
  private loading: AbortController | null = null;
  private refreshTimer: number | null = null;
  private picked: string | null = null;
  private readonly toggle: HTMLButtonElement;
  private readonly body: HTMLElement;
  private readonly summary: HTMLElement;
  private readonly countList: HTMLElement;
  private readonly codeSelect: HTMLSelectElement;
  private readonly severitySelect: HTMLSelectElement;
  private readonly items: HTMLUListElement;
  private readonly more: HTMLButtonElement;
  private readonly pageNote: HTMLElement;

  constructor(
    private readonly root: HTMLElement,
    private readonly events: QualityEvents,
  ) {
    this.toggle = el('button', {
      className: 'btn',
      text: 'Show findings',
      title: 'Automated checks of this image’s annotations (Q)',
      attrs: { type: 'button', id: 'quality-toggle', 'aria-pressed': 'false' },
    });
    this.toggle.addEventListener('click', () => this.setOpen(!this.open));
    const recheck = el('button', {
      className: 'btn',
      text: 'Re-check',
      title: 'Run the checks again (after edits)',
      attrs: { type: 'button', id: 'quality-recheck' },
    });
    recheck.addEventListener('click', () => void this.reload());
    this.summary = el('p', { className: 'control-hint', attrs: { id: 'quality-summary', 'aria-live': 'polite' } });
    this.countList = el('ul', { className: 'quality-counts', attrs: { id: 'quality-counts' } });
    this.codeSelect = el('select', { className: 'field-input', title: 'Code', attrs: { id: 'quality-code', 'aria-label': 'Code' } });
    this.codeSelect.addEventListener('change', () => {
      this.code = this.codeSelect.value || null;
      void this.reload();
    });
    this.severitySelect = el('select', {
      className: 'field-input',
      title: 'Severity',
      attrs: { id: 'quality-severity', 'aria-label': 'Severity' },
    });
    this.severitySelect.replaceChildren(
      el('option', { text: 'Any severity', attrs: { value: '' } }),
      ...SEVERITIES.map((s) => el('option', { text: s, attrs: { value: s } })),
    );
    this.severitySelect.addEventListener('change', () => {
      this.severity = (this.severitySelect.value || null) as Severity | null;
      void this.reload();
    });
    this.items = el('ul', { className: 'annot-list', attrs: { id: 'quality-items', role: 'listbox', 'aria-label': 'Findings' } });
    this.pageNote = el('span', { className: 'control-hint', attrs: { id: 'quality-page' } });
    this.more = el('button', { className: 'btn', text: 'More', title: 'Load the next findings', attrs: { type: 'button', id: 'quality-more' } });
    this.more.addEventListener('click', () => void this.loadMore());
    this.body = el('div', { className: 'quality-body' }, [
      this.summary,
      this.countList,
      el('div', { className: 'filter-row filter-row-2' }, [this.codeSelect, this.severitySelect]),
      this.items,
      el('div', { className: 'field-row' }, [this.pageNote, this.more]),
    ]);
    this.body.hidden = true;
    root.replaceChildren(
      el('section', { className: 'control' }, [
        el('h3', { className: 'control-title', text: 'Quality' }),
        el('div', { className: 'field-row' }, [this.toggle, recheck]),
        this.body,
      ]),
    );
    root.hidden = true;
    this.fillCodes();
  }

  get isOpen(): boolean {
    return this.open;
  }

  get isAllowed(): boolean {
    return this.allowed;
  }

  /** Offered to reviewers and admins of the image's project only. */
  setAllowed(allowed: boolean): void {
    this.allowed = allowed;
    this.root.hidden = !allowed;
    if (!allowed) this.setOpen(false);
    else if (this.open) void this.reload();
  }

  /** A new image (null: none): forget the findings; read them again if open. */
  setImage(image: string | null): void {
    this.image = image;
    this.loading?.abort();
    this.loading = null;
    this.findings = [];
    this.answer = null;
    this.picked = null;
    this.render();
  }

  setOpen(open: boolean): void {
    if (open && !this.allowed) return;
    this.open = open;
    this.toggle.setAttribute('aria-pressed', String(open));
    this.toggle.textContent = open ? 'Hide findings' : 'Show findings';
    this.body.hidden = !open;
    this.root.dataset.open = String(open);
    if (open) void this.reload();
    else this.loading?.abort();
  }

  /** An annotation was saved or deleted: refresh soon if open. */
  changed(): void {
    if (!this.open) return;
    if (this.refreshTimer !== null) window.clearTimeout(this.refreshTimer);
    this.refreshTimer = window.setTimeout(() => {
      this.refreshTimer = null;
      void this.reload();
    }, REFRESH_MS);
  }

  private params(cursor: string | null): URLSearchParams | null {
    if (this.image === null) return null;
    return checksParams({
      image: this.image,
      codes: this.code ? [this.code] : [],
      severity: this.severity,
      cursor,
      limit: PAGE,
    });
  }

  /** The first page again (Re-check, a filter, an edit). */
  async reload(): Promise<void> {
    const params = this.params(null);
    if (!this.open || params === null) return;
    this.loading?.abort();
    const loading = new AbortController();
    this.loading = loading;
    this.root.dataset.state = 'loading';
    try {
      const answer = await this.events.fetchPage(params, loading.signal);
      if (loading.signal.aborted) return;
      this.answer = answer;
      this.findings = answer.findings;
      this.render();
    } catch (error) {
      if (!loading.signal.aborted) this.events.error('The checks could not be read', error instanceof Error ? error.message : String(error));
    } finally {
      if (this.loading === loading) this.loading = null;
    }
  }

  private async loadMore(): Promise<void> {
    const cursor = this.answer?.next_cursor ?? null;
    const params = this.params(cursor);
    if (cursor === null || params === null || this.loading) return;
    const loading = new AbortController();
    this.loading = loading;
    this.more.disabled = true;
    try {
      const answer = await this.events.fetchPage(params, loading.signal);
      if (loading.signal.aborted) return;
      this.answer = answer;
      this.findings = [...this.findings, ...answer.findings];
      this.render();
    } catch (error) {
      if (!loading.signal.aborted) this.events.error('The checks could not be read', error instanceof Error ? error.message : String(error));
    } finally {
      if (this.loading === loading) this.loading = null;
      this.more.disabled = false;
    }
  }

  private fillCodes(): void {
    const choices = codeChoices(this.answer?.counts ?? {}, this.code);
    this.codeSelect.replaceChildren(
      el('option', { text: 'Any code', attrs: { value: '' } }),
      ...choices.map((c) => el('option', { text: c, attrs: { value: c } })),
    );
    this.codeSelect.value = this.code ?? '';
  }

  private render(): void {
    const answer = this.answer;
    this.fillCodes();
    this.summary.textContent = answer ? countsSummary(answer) : this.image ? 'Not checked yet.' : '';
    this.countList.replaceChildren(
      ...Object.entries(answer?.counts ?? {}).map(([code, n]) =>
        el('li', { dataset: { code, count: String(n) } }, [el('code', { text: code }), ` ${n}`]),
      ),
    );
    const more = answer?.next_cursor != null;
    this.more.hidden = !more;
    this.pageNote.textContent = answer ? `${this.findings.length} of ${answer.total} shown` : '';
    this.root.dataset.state = answer ? 'ready' : 'empty';
    this.root.dataset.total = String(answer?.total ?? 0);
    this.items.replaceChildren(...this.findings.map((f) => this.row(f)));
  }

  private row(f: Finding): HTMLLIElement {
    const key = findingKey(f);
    const who = [f.annotation !== null ? `#${f.annotation}` : 'image', f.label, f.author ? `by ${f.author}` : null]
      .filter(Boolean)
      .join(' · ');
    const where = f.location?.slice != null ? ` · ${f.location.plane ?? ''} slice ${f.location.slice}` : '';
    const item = el(
      'li',
      {
        className: 'annot-item quality-item',
        attrs: { tabindex: '0', role: 'option', 'aria-selected': String(this.picked === key) },
        dataset: { code: f.code, severity: f.severity, annotation: f.annotation !== null ? String(f.annotation) : '', key },
      },
      [
        el('span', { className: 'annot-item-main' }, [
          el('span', { className: `status-badge severity-${f.severity}`, text: f.severity }),
          ' ',
          el('code', { text: f.code }),
        ]),
        el('span', { className: 'annot-item-meta', text: who + where }),
        el('span', { className: 'annot-item-meta quality-message', text: f.message }),
      ],
    );
    const pick = (): void => {
      this.picked = key;
      for (const node of this.items.querySelectorAll<HTMLElement>('.quality-item')) {
        node.setAttribute('aria-selected', String(node.dataset.key === key));
      }
      this.events.show(f);
    };
    item.addEventListener('click', pick);
    item.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        pick();
      }
    });
    return item;
  }
}
