import { describe, expect, it } from 'vitest';

import type { AnnotationFeature } from '../api';
import { ReviewQueue } from './reviewQueue';

const item = (id: number): AnnotationFeature => ({
  type: 'Feature',
  id,
  geometry: { type: 'Point', coordinates: [0, 0] },
  properties: { label: 'x', status: 'submitted' },
});

describe('review stepping', () => {
  it('is empty at first and steps to nothing', () => {
    const q = new ReviewQueue();
    expect(q.current).toBeNull();
    expect(q.next()).toBeNull();
    expect(q.previous()).toBeNull();
    expect(q.length).toBe(0);
  });

  it('steps forward and back, wrapping round', () => {
    const q = new ReviewQueue();
    q.setItems([item(1), item(2), item(3)]);
    expect(q.current?.id).toBe(1);
    expect(q.next()?.id).toBe(2);
    expect(q.next()?.id).toBe(3);
    expect(q.next()?.id).toBe(1);
    expect(q.previous()?.id).toBe(3);
    expect(q.position).toBe(2);
  });

  it('after a decision the next item is current, and the last falls back', () => {
    const q = new ReviewQueue();
    q.setItems([item(1), item(2), item(3)]);
    q.next(); // on 2
    expect(q.remove(2)?.id).toBe(3);
    expect(q.remove(3)?.id).toBe(1);
    expect(q.remove(1)).toBeNull();
    expect(q.length).toBe(0);
  });

  it('removing an earlier item keeps the current one', () => {
    const q = new ReviewQueue();
    q.setItems([item(1), item(2), item(3)]);
    q.next();
    q.next(); // on 3
    expect(q.remove(1)?.id).toBe(3);
    expect(q.position).toBe(1);
    expect(q.remove(42)?.id).toBe(3); // not in the queue: nothing changes
  });

  it('a refresh keeps the current annotation where it is still listed', () => {
    const q = new ReviewQueue();
    q.setItems([item(1), item(2), item(3)]);
    q.next(); // on 2
    q.setItems([item(0), item(2), item(5), item(3)]);
    expect(q.current?.id).toBe(2);
    q.setItems([item(7)]);
    expect(q.current?.id).toBe(7);
  });
});

describe('review queue read page by page', () => {
  it('appending a further page keeps the current item and skips ids already queued', () => {
    const q = new ReviewQueue();
    q.setItems([item(1), item(2)]);
    q.next();
    q.append([item(2), item(3), item(4)]);
    expect(q.length).toBe(4);
    expect(q.current?.id).toBe(2);
    expect(q.next()?.id).toBe(3);
    expect(q.next()?.id).toBe(4);
    expect(q.next()?.id).toBe(1); // wraps round
  });
});
