import { describe, expect, it } from 'vitest';

import type { AnnotationFeature } from '../api';
import { filterAnnotations, filterChoices, listSummary, matches, NO_FILTER, onSlice, statusOf, upsertFeature, withoutFeature } from './annotationFilter';

function feature(id: number, label: string, author: string, status?: string, extra: Record<string, unknown> = {}): AnnotationFeature {
  return {
    type: 'Feature',
    id,
    geometry: { type: 'Point', coordinates: [id, id] },
    properties: { label, author, ...(status ? { status: status as 'draft' } : {}), ...extra },
  };
}

const tag: AnnotationFeature = { type: 'Feature', id: 9, geometry: null, properties: { label: 'cloudy', kind: 'tag', author: 'ann' } };
const all = [
  feature(3, 'vehicle/car', 'ann', 'submitted', { slice: 4, plane: 'axial' }),
  feature(1, 'building', 'rev', 'accepted', { slice: 2, plane: 'axial' }),
  feature(2, 'vehicle', 'ann', undefined, { slice: 4, plane: 'coronal' }),
  tag,
];

describe('annotation filters', () => {
  it('keeps every shape (not the tags) without a filter, ordered by slice then id', () => {
    expect(filterAnnotations(all, NO_FILTER).map((f) => f.id)).toEqual([1, 2, 3]);
  });

  it('a label matches itself and the labels below it', () => {
    const vehicles = filterAnnotations(all, { ...NO_FILTER, label: 'vehicle' });
    expect(vehicles.map((f) => f.id)).toEqual([2, 3]);
    expect(matches(all[0] as AnnotationFeature, { ...NO_FILTER, label: 'vehicle/car' })).toBe(true);
    expect(matches(all[0] as AnnotationFeature, { ...NO_FILTER, label: 'vehic' })).toBe(false);
  });

  it('combines author and status; a missing status is a draft', () => {
    expect(statusOf(all[2] as AnnotationFeature)).toBe('draft');
    expect(filterAnnotations(all, { label: null, author: 'ann', status: 'draft' }).map((f) => f.id)).toEqual([2]);
    expect(filterAnnotations(all, { label: null, author: 'ann', status: 'submitted' }).map((f) => f.id)).toEqual([3]);
    expect(filterAnnotations(all, { label: 'building', author: 'ann', status: null })).toEqual([]);
  });

  it('offers the labels and authors present among the shapes', () => {
    expect(filterChoices(all)).toEqual({ labels: ['building', 'vehicle', 'vehicle/car'], authors: ['ann', 'rev'] });
  });

  it('tells the shapes of one slice of one plane', () => {
    const axial4 = all.filter((f) => onSlice(f, { slice: 4, plane: 'axial' }));
    expect(axial4.map((f) => f.id)).toEqual([3]);
    expect(all.filter((f) => onSlice(f, null))).toHaveLength(4);
  });
});

describe('list rows from save answers', () => {
  it('a stored annotation replaces the row of its id in place, or is added at the end', () => {
    const rows = [feature(1, 'a', 'ann'), feature(2, 'b', 'ann')];
    const updated = feature(1, 'a', 'ann', 'submitted');
    const replaced = upsertFeature(rows, updated);
    expect(replaced.map((f) => [f.id, f.properties.status])).toEqual([
      [1, 'submitted'],
      [2, undefined],
    ]);
    expect(rows[0]?.properties.status).toBeUndefined(); // the input is not changed
    expect(upsertFeature(rows, feature(7, 'c', 'rev')).map((f) => f.id)).toEqual([1, 2, 7]);
  });

  it('a deleted id is dropped, whether given as a number or a string', () => {
    const rows = [feature(1, 'a', 'ann'), feature(2, 'b', 'ann'), feature(3, 'c', 'ann')];
    expect(withoutFeature(rows, 2).map((f) => f.id)).toEqual([1, 3]);
    expect(withoutFeature(rows, '3').map((f) => f.id)).toEqual([1, 2]);
  });
});

describe('list summary', () => {
  it('says how many rows are drawn of those matching, and whether the server has more', () => {
    expect(listSummary(3, 3, false)).toBe('3 shown');
    expect(listSummary(200, 12345, false)).toBe('Showing 200 of 12,345');
    expect(listSummary(200, 1000, true)).toBe('Showing 200 of 1,000 · more on the server');
    expect(listSummary(1000, 1000, true)).toBe('1,000 shown · more on the server');
  });
});
