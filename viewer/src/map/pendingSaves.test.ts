import { describe, expect, it } from 'vitest';

import type { AnnotationFeature } from '../api';
import { ApiError } from '../api';
import { decodeMask, encodeMask, PixelMask } from './maskPaint';
import type { KeyValueStore, SaveApi, SaveRequest } from './pendingSaves';
import { isRetryable, maskSaveRequest, PendingSaves, retryDelayMs, sendSave } from './pendingSaves';

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

// -- brush (mask) saves --------------------------------------------------------------------

/** A mask of the pixels listed (col, row), on a 20 x 20 image. */
function maskOf(...list: [number, number][]): PixelMask {
  const mask = new PixelMask(0, 0, 20, 20);
  for (const [c, r] of list) mask.data[r * 20 + c] = 1;
  return mask.trimmed() as PixelMask;
}

function pixelsOf(feature: AnnotationFeature | undefined): string[] {
  const json = feature?.properties.mask as Parameters<typeof decodeMask>[0];
  const mask = decodeMask(json);
  const out: string[] = [];
  for (let y = 0; y < mask.height; y++) for (let x = 0; x < mask.width; x++) if (mask.data[y * mask.width + x]) out.push(`${mask.col + x},${mask.row + y}`);
  return out.sort();
}

const maskBody = (mask: PixelMask): AnnotationFeature => ({
  type: 'Feature',
  geometry: null,
  properties: { label: 'lesion', kind: 'mask', status: 'draft', mask: encodeMask(mask) },
});

/** A server of mask annotations with versions and If-Match, as the real one answers. */
class FakeServer implements SaveApi {
  readonly rows = new Map<number, AnnotationFeature>();
  readonly calls: string[] = [];
  private next = 1;
  down = 0; // answer this many calls with a 503 first

  private gate(call: string): void {
    this.calls.push(call);
    if (this.down > 0) {
      this.down -= 1;
      throw new ApiError(503, 'http_error', 'Service Unavailable');
    }
  }

  put(mask: PixelMask, version = 1): number {
    const id = this.next++;
    this.rows.set(id, { ...maskBody(mask), id, properties: { ...maskBody(mask).properties, version } });
    return id;
  }

  async create(_image: string, feature: AnnotationFeature): Promise<AnnotationFeature> {
    this.gate('create');
    const id = this.next++;
    const stored = { ...feature, id, properties: { ...feature.properties, version: 1 } };
    this.rows.set(id, stored);
    return stored;
  }

  async update(id: number | string, version: number, feature: AnnotationFeature): Promise<AnnotationFeature> {
    this.gate(`update ${id} @${version}`);
    const row = this.rows.get(Number(id));
    if (!row) throw new ApiError(404, 'not_found', 'no such annotation');
    const now = Number(row.properties.version);
    if (now !== version) throw new ApiError(412, 'precondition_failed', `version is ${now}`);
    const stored = { ...feature, id: Number(id), properties: { ...feature.properties, version: now + 1 } };
    this.rows.set(Number(id), stored);
    return stored;
  }

  async remove(id: number | string, version: number): Promise<void> {
    this.gate(`delete ${id} @${version}`);
    const row = this.rows.get(Number(id));
    if (!row) throw new ApiError(404, 'not_found', 'no such annotation');
    if (Number(row.properties.version) !== version) throw new ApiError(412, 'precondition_failed', 'stale');
    this.rows.delete(Number(id));
  }

  async get(id: number | string): Promise<AnnotationFeature> {
    this.gate(`get ${id}`);
    const row = this.rows.get(Number(id));
    if (!row) throw new ApiError(404, 'not_found', 'no such annotation');
    return row;
  }
}

describe('brush saves', () => {
  it('a new mask is a create; a merge an update against its version and base; an emptied mask a delete', () => {
    const stroke = maskOf([1, 1], [2, 1]);
    expect(maskSaveRequest('img', { id: null, version: 0, saved: null }, stroke, maskBody)).toEqual({
      imageId: 'img',
      op: 'create',
      feature: maskBody(stroke),
    });
    expect(maskSaveRequest('img', { id: null, version: 0, saved: null }, null, maskBody)).toBeNull();
    const saved = maskOf([1, 1]);
    const update = maskSaveRequest('img', { id: 7, version: 3, saved }, stroke, maskBody);
    expect(update).toEqual({ imageId: 'img', op: 'update', id: 7, version: 3, feature: maskBody(stroke), base: encodeMask(saved) });
    const gone = maskSaveRequest('img', { id: 7, version: 3, saved }, null, maskBody);
    expect([gone?.op, gone?.id, gone?.version, gone?.base]).toEqual(['delete', 7, 3, encodeMask(saved)]);
  });

  it('is kept with its base across a reload, and sent as it was when the server is back', async () => {
    const server = new FakeServer();
    const base = maskOf([1, 1]);
    const id = server.put(base, 2);
    const request = maskSaveRequest('img', { id, version: 2, saved: base }, maskOf([1, 1], [5, 5]), maskBody) as SaveRequest;
    server.down = 1;
    const error = await sendSave(request, server).catch((e: unknown) => e);
    expect(isRetryable(error)).toBe(true);
    const storage = new MemoryStore();
    new PendingSaves(storage).put({ ...request, error: String(error) });
    const [kept] = new PendingSaves(storage).forImage('img'); // a reload
    expect(kept?.base).toEqual(encodeMask(base));
    const outcome = await sendSave(kept as SaveRequest, server);
    expect(outcome.merge).toBe('none');
    expect(server.calls).toEqual([`update ${id} @2`, `update ${id} @2`]);
    expect(pixelsOf(server.rows.get(id))).toEqual(['1,1', '5,5']);
  });

  it('a merge whose mask changed meanwhile (412) is replayed onto the current version', async () => {
    const server = new FakeServer();
    const base = maskOf([1, 1], [2, 1], [3, 1]);
    const id = server.put(maskOf([1, 1], [2, 1], [3, 1], [9, 9]), 5); // someone added (9,9): v5
    // This user painted (5,5) and erased (3,1) on version 4.
    const request = maskSaveRequest('img', { id, version: 4, saved: base }, maskOf([1, 1], [2, 1], [5, 5]), maskBody) as SaveRequest;
    const outcome = await sendSave(request, server);
    expect(outcome.merge).toBe('rebased');
    expect(server.calls).toEqual([`update ${id} @4`, `get ${id}`, `update ${id} @5`]);
    expect(pixelsOf(server.rows.get(id))).toEqual(['1,1', '2,1', '5,5', '9,9']);
    expect(pixelsOf(outcome.stored ?? undefined)).toEqual(['1,1', '2,1', '5,5', '9,9']);
    expect(outcome.stored?.properties.version).toBe(6);
  });

  it('a mask deleted meanwhile is stored anew; an emptied one replayed keeps only their additions', async () => {
    const server = new FakeServer();
    const base = maskOf([1, 1]);
    const recreated = await sendSave(maskSaveRequest('img', { id: 99, version: 1, saved: base }, maskOf([1, 1], [4, 4]), maskBody) as SaveRequest, server);
    expect(recreated.merge).toBe('recreated');
    expect(pixelsOf(recreated.stored ?? undefined)).toEqual(['1,1', '4,4']);

    const id = server.put(maskOf([1, 1], [6, 6]), 2); // they added (6,6)
    const emptied = await sendSave(maskSaveRequest('img', { id, version: 1, saved: base }, null, maskBody) as SaveRequest, server);
    expect(emptied.merge).toBe('rebased');
    expect(pixelsOf(server.rows.get(id))).toEqual(['6,6']);
    const other = server.put(maskOf([1, 1]), 3);
    const gone = await sendSave(maskSaveRequest('img', { id: other, version: 2, saved: base }, null, maskBody) as SaveRequest, server);
    expect([gone.merge, server.rows.has(other)]).toEqual(['rebased', false]);
  });

  it('a save without a base (not a mask) refused with 412 is not replayed', async () => {
    const server = new FakeServer();
    const id = server.put(maskOf([1, 1]), 3);
    const stale = { imageId: 'img', op: 'update' as const, id, version: 2, feature: maskBody(maskOf([2, 2])) };
    const error = await sendSave(stale, server).catch((e: unknown) => e);
    expect(error instanceof ApiError && error.status).toBe(412);
    expect(server.calls).toEqual([`update ${id} @2`]);
  });
});
