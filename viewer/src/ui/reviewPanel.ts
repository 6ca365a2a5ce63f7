/**
 * Review mode (reviewers and admins): step through the image's submitted annotations (N /
 * Shift+N), each zoomed to and selected on the map, and accept (A) or reject (R) it with a
 * comment (`POST /annotations/{id}/review`, If-Match its version).
 */
import type { AnnotationFeature } from '../api';
import { ApiError, reviewAnnotation } from '../api';
import { describe, statusOf } from './annotationFilter';
import { el } from './dom';
import { ReviewQueue } from './reviewQueue';

export interface ReviewEvents {
  /** Show this annotation (go to its slice, zoom, select). */
  show: (feature: AnnotationFeature) => void;
  /** A decision was stored. */
  decided: (stored: AnnotationFeature) => void;
  error: (title: string, message: string) => void;
}

export class ReviewPanel {
  private readonly queue = new ReviewQueue();
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

  /** Every annotation of the image: the submitted ones form the queue. */
  setAnnotations(features: AnnotationFeature[]): void {
    const had = this.queue.current;
    this.queue.setItems(features.filter((f) => f.geometry !== null && statusOf(f) === 'submitted'));
    this.render();
    // Review started before the list arrived: show the first one now.
    const current = this.queue.current;
    if (this.active && !had && current) this.events.show(current);
  }

  setActive(active: boolean): void {
    this.active = active;
    this.toggle.setAttribute('aria-pressed', String(active));
    this.toggle.textContent = active ? 'Stop review' : 'Start review';
    this.body.hidden = !active;
    this.render();
    const current = this.queue.current;
    if (active && current) this.events.show(current);
  }

  /** N / Shift+N. */
  step(delta: 1 | -1): void {
    if (!this.active) return;
    const current = delta > 0 ? this.queue.next() : this.queue.previous();
    this.comment.value = '';
    this.render();
    if (current) this.events.show(current);
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
    this.position.textContent = n === 0 ? 'none submitted' : `${this.queue.position + 1} of ${n}`;
    this.position.dataset.count = String(n);
    this.summary.dataset.id = current?.id !== undefined ? String(current.id) : '';
    this.summary.textContent = current
      ? `${current.properties.label} · ${describe(current)} · by ${current.properties.author ?? '?'}`
      : 'Nothing is waiting for review.';
  }
}
