import { describe, expect, it } from 'vitest';

import type { AnnotationFeature } from '../api';
import { ApiError } from '../api';
import type { KeyValueStore } from './pendingSaves';
import { isRetryable, PendingSaves, retryDelayMs } from './pendingSaves';

class MemoryStore implements KeyValueStore {
  readonly data = new Map<string, string>();
  getItem(key: string): string | null {
    return this.data.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.data.set(key, value);
  }
  removeItem(key: string): void {
    this.data.delete(key);
  }
}

const polygon: AnnotationFeature = {
  type: 'Feature',
  geometry: { type: 'Polygon', coordinates: [[[0, 0], [10, 0], [10, 10], [0, 0]]] },
  properties: { label: 'field', status: 'draft' },
};

describe('which failures are kept', () => {
  it('keeps network errors and 5xx, 408, 429; not other 4xx', () => {
    expect(isRetryable(new TypeError('Failed to fetch'))).toBe(true);
    expect(isRetryable(new ApiError(503, 'http_error', 'Service Unavailable'))).toBe(true);
    expect(isRetryable(new ApiError(500, 'http_error', 'boom'))).toBe(true);
    expect(isRetryable(new ApiError(429, 'http_error', 'slow down'))).toBe(true);
    expect(isRetryable(new ApiError(422, 'invalid_geometry', 'self-intersection'))).toBe(false);
    expect(isRetryable(new ApiError(412, 'precondition_failed', 'stale'))).toBe(false);
    expect(isRetryable(new ApiError(403, 'forbidden', 'no'))).toBe(false);
    expect(isRetryable(new Error('something else'))).toBe(false);
  });

  it('backs off 1, 2, 4 ... seconds up to 30', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 20].map(retryDelayMs)).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  });
});

describe('the pending-save queue', () => {
  it('keeps entries per image, in order, across instances (a reload)', () => {
    const storage = new MemoryStore();
    const first = new PendingSaves(storage);
    const a = first.put({ imageId: 'img', op: 'create', feature: polygon, error: 'Failed to fetch' });
    const b = first.put({ imageId: 'img', op: 'delete', id: 7, version: 2, error: '503' });
    first.put({ imageId: 'other', op: 'delete', id: 8, version: 1, error: '503' });
    const again = new PendingSaves(storage);
    expect(again.forImage('img').map((p) => p.key)).toEqual([a.key, b.key]);
    expect(again.forImage('img')[0]?.feature).toEqual(polygon);
    expect(again.forImage('other')).toHaveLength(1);
    expect(a.attempts).toBe(1);
    expect(a.key).not.toBe(b.key);
  });

  it('a retry of the same key counts attempts and keeps its place and start time', () => {
    const q = new PendingSaves(new MemoryStore());
    const a = q.put({ imageId: 'img', op: 'create', feature: polygon, error: 'one' });
    const again = q.put({ ...a, error: 'two' });
    expect(again.attempts).toBe(2);
    expect(again.since).toBe(a.since);
    expect(q.forImage('img')).toHaveLength(1);
    expect(q.get('img', a.key)?.error).toBe('two');
  });

  it('an update keyed by annotation replaces the older pending update', () => {
    const q = new PendingSaves(new MemoryStore());
    q.put({ key: 'update-5', imageId: 'img', op: 'update', id: 5, version: 3, feature: polygon, error: 'x' });
    q.put({ key: 'update-5', imageId: 'img', op: 'update', id: 5, version: 3, feature: { ...polygon, properties: { label: 'moved' } }, error: 'y' });
    const list = q.forImage('img');
    expect(list).toHaveLength(1);
    expect(list[0]?.feature?.properties.label).toBe('moved');
  });

  it('removing the last entry removes the key; bad stored text reads as empty', () => {
    const storage = new MemoryStore();
    const q = new PendingSaves(storage);
    const a = q.put({ imageId: 'img', op: 'create', feature: polygon, error: 'x' });
    q.remove('img', a.key);
    expect(storage.data.size).toBe(0);
    storage.setItem('tessera.pending.img', '{not json');
    expect(q.forImage('img')).toEqual([]);
  });
});
