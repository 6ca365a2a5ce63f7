/**
 * Review stepping: the submitted annotations of an image (the server's `status=submitted`
 * listing), one current at a time. Pure (no DOM), so the panel and the unit tests share it.
 */
import type { AnnotationFeature } from '../api';

export class ReviewQueue {
  private items: AnnotationFeature[] = [];
  private index = 0;

  /** Replace the items; stay on the same annotation if it is still there. */
  setItems(items: AnnotationFeature[]): void {
    const keep = this.current?.id;
    this.items = [...items];
    const at = keep === undefined ? -1 : this.items.findIndex((f) => f.id === keep);
    this.index = at >= 0 ? at : Math.min(this.index, Math.max(0, this.items.length - 1));
  }

  /** Add the items of a further page at the end (ids already queued are skipped). */
  append(items: AnnotationFeature[]): void {
    const queued = new Set(this.items.map((f) => f.id));
    this.items.push(...items.filter((f) => !queued.has(f.id)));
  }

  get length(): number {
    return this.items.length;
  }

  /** 0-based position of the current item (0 when empty). */
  get position(): number {
    return this.index;
  }

  get current(): AnnotationFeature | null {
    return this.items[this.index] ?? null;
  }

  /** Step forward (wrapping round); the new current item. */
  next(): AnnotationFeature | null {
    if (this.items.length === 0) return null;
    this.index = (this.index + 1) % this.items.length;
    return this.current;
  }

  /** Step back (wrapping round); the new current item. */
  previous(): AnnotationFeature | null {
    if (this.items.length === 0) return null;
    this.index = (this.index - 1 + this.items.length) % this.items.length;
    return this.current;
  }

  /**
   * Drop a decided item; the current one becomes the item after it (or the last, at the end),
   * so deciding one after another walks the queue.
   */
  remove(id: number | string): AnnotationFeature | null {
    const at = this.items.findIndex((f) => f.id === id);
    if (at < 0) return this.current;
    this.items.splice(at, 1);
    if (at < this.index) this.index -= 1;
    if (this.index >= this.items.length) this.index = Math.max(0, this.items.length - 1);
    return this.current;
  }
}
