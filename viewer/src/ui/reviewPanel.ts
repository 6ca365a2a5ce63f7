/**
 * Review mode (reviewers and admins): step through the image's submitted annotations (N /
 * Shift+N), each zoomed to and selected on the map, and accept (A) or reject (R) it with a
 * comment (`POST /annotations/{id}/review`, If-Match its version). The queue is the image's
 * listing filtered by the server to `status=submitted`, read a page at a time only while
 * reviewing, and topped up as the reviewer nears its end.
 */
import type { AnnotationFeature, AnnotationPage } from '../api';
import { ApiError, reviewAnnotation } from '../api';
import { describe, isShape } from './annotationFilter';
import { el } from './dom';
import { ReviewQueue } from './reviewQueue';

/**
 * Pages of 1,000 read per top-up at most (more than one only if a page held no shape: tags are
 * not reviewed here), and the queue length under which one starts.
 */
const PAGES_PER_TOP_UP = 5;
const TOP_UP_BELOW = 20;

export interface ReviewEvents {
  /** Show this annotation (go to its slice, zoom, select). */
  show: (feature: AnnotationFeature) => void;
  /** A decision was stored. */
  decided: (stored: AnnotationFeature) => void;
  error: (title: string, message: string) => void;
  /** One page of the image's submitted annotations after `cursor` (null: the first page). */
  fetchPage: (cursor: string | null, signal: AbortSignal) => Promise<AnnotationPage>;
}

export class ReviewPanel {
  private queue = new ReviewQueue();
  /** Where the listing goes on; null at its end; undefined before the first page. */
  private cursor: string | null | undefined = undefined;
  private loading: AbortController | null = null;
  private active = false;
  private busy = false;
  private readonly toggle: HTMLButtonElement;
  private readonly body: HTMLElement;
  private readonly position: HTMLElement;
  private readonly summary: HTMLElement;
  private readonly comment: HTMLTextAreaElement;

  constructor(
    private readonly root: HTMLElement,
    private readonly events: ReviewEvents,
  ) {
    this.toggle = el('button', {
      className: 'btn',
      text: 'Start review',
      title: 'Step through the submitted annotations of this image',
      attrs: { type: 'button', id: 'review-toggle', 'aria-pressed': 'false' },
    });
    this.toggle.addEventListener('click', () => this.setActive(!this.active));
    this.position = el('span', { className: 'control-hint', attrs: { id: 'review-position' } });
    this.summary = el('div', { className: 'review-summary', attrs: { id: 'review-current' } });
    this.comment = el('textarea', {
      className: 'field-input review-comment-input',
      attrs: { id: 'review-comment', rows: '3', placeholder: 'Comment (needed to reject)', 'aria-label': 'Review comment' },
    });
    const button = (id: string, text: string, title: string, action: () => void, primary = false): HTMLButtonElement => {
      const node = el('button', { className: primary ? 'btn btn-primary' : 'btn', text, title, attrs: { type: 'button', id } });
      node.addEventListener('click', action);
      return node;
    };
    this.body = el('div', { className: 'review-body' }, [
      el('div', { className: 'field-row' }, [
        button('review-previous', '‹ Previous', 'Previous submitted annotation (Shift+N)', () => this.step(-1)),
        this.position,
        button('review-next', 'Next ›', 'Next submitted annotation (N)', () => this.step(1)),
      ]),
      this.summary,
      this.comment,
      el('div', { className: 'field-row' }, [
        button('review-accept', 'Accept', 'Accept it (A)', () => void this.decide('accept'), true),
        button('review-reject', 'Reject', 'Reject it with the comment (R)', () => void this.decide('reject')),
      ]),
    ]);
    this.body.hidden = true;
    root.replaceChildren(
      el('section', { className: 'control' }, [
        el('h3', { className: 'control-title', text: 'Review' }),
        el('div', { className: 'field-row' }, [this.toggle]),
        this.body,
      ]),
    );
    root.hidden = true;
  }

  get isActive(): boolean {
    return this.active;
  }

  /** Shown to reviewers and admins only. */
  setAllowed(allowed: boolean): void {
    this.root.hidden = !allowed;
    if (!allowed) this.setActive(false);
  }

  /** A new image: an empty queue, read from its first page when reviewing. */
  reset(): void {
    this.loading?.abort();
    this.loading = null;
    this.queue = new ReviewQueue();
    this.cursor = undefined;
    this.render();
    if (this.active) void this.topUp();
  }

  /**
   * Read the next page of submitted annotations (further ones while fewer than TOP_UP_BELOW
   * shapes are queued, up to PAGES_PER_TOP_UP, or to the end); show the first one if none was
   * shown.
   */
  private async topUp(): Promise<void> {
    if (this.loading || this.cursor === null) return;
    const loading = new AbortController();
    this.loading = loading;
    const had = this.queue.current;
    try {
      for (let pages = 0; pages < PAGES_PER_TOP_UP && this.cursor !== null; pages += 1) {
        const page = await this.events.fetchPage(this.cursor ?? null, loading.signal);
        if (loading.signal.aborted) return;
        this.queue.append(page.features.filter(isShape));
        this.cursor = page.nextCursor;
        if (this.queue.length >= TOP_UP_BELOW) break;
      }
    } catch (error) {
      if (!loading.signal.aborted) this.events.error('The review queue could not be read', error instanceof Error ? error.message : String(error));
      return;
    } finally {
      if (this.loading === loading) this.loading = null;
    }
    this.render();
    const current = this.queue.current;
    if (this.active && !had && current) this.events.show(current);
  }

  /** Near the end of what is queued, read on (in the background). */
  private topUpIfLow(): void {
    if (this.queue.length - this.queue.position < TOP_UP_BELOW) void this.topUp();
  }

  setActive(active: boolean): void {
    this.active = active;
    this.toggle.setAttribute('aria-pressed', String(active));
    this.toggle.textContent = active ? 'Stop review' : 'Start review';
    this.body.hidden = !active;
    this.render();
    const current = this.queue.current;
    if (active && current) this.events.show(current);
    if (active) this.topUpIfLow();
  }

  /** N / Shift+N. */
  step(delta: 1 | -1): void {
    if (!this.active) return;
    const current = delta > 0 ? this.queue.next() : this.queue.previous();
    this.comment.value = '';
    this.render();
    if (current) this.events.show(current);
    this.topUpIfLow();
  }

  /** A / R, or the buttons. */
  async decide(decision: 'accept' | 'reject'): Promise<void> {
    const current = this.queue.current;
    if (!this.active || !current || current.id === undefined || this.busy) return;
    const comment = this.comment.value.trim();
    if (decision === 'reject' && !comment) {
      this.events.error('Say why', 'A rejection needs a comment: write what to fix, then press Reject.');
      this.comment.focus();
      return;
    }
    this.busy = true;
    try {
      const stored = await reviewAnnotation(current.id, Number(current.properties.version ?? 1), decision, comment);
      this.comment.value = '';
      const next = this.queue.remove(current.id);
      this.render();
      this.events.decided(stored);
      if (next) this.events.show(next);
      this.topUpIfLow();
    } catch (error) {
      const stale = error instanceof ApiError && error.status === 412;
      this.events.error(
        stale ? 'Someone changed this annotation' : 'The decision was not saved',
        stale ? 'It was edited since it was listed; look at it again.' : error instanceof Error ? error.message : String(error),
      );
    } finally {
      this.busy = false;
    }
  }

  private render(): void {
    const current = this.queue.current;
    const n = this.queue.length;
    const more = this.cursor !== null ? '+' : ''; // the listing has not been read to its end
    const none = this.cursor === null ? 'none submitted' : 'looking…';
    this.position.textContent = n === 0 ? none : `${this.queue.position + 1} of ${n}${more}`;
    this.position.dataset.count = String(n);
    this.summary.dataset.id = current?.id !== undefined ? String(current.id) : '';
    this.summary.textContent = current
      ? `${current.properties.label} · ${describe(current)} · by ${current.properties.author ?? '?'}`
      : 'Nothing is waiting for review.';
  }
}
