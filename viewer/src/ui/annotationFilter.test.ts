import { describe, expect, it } from 'vitest';

import type { AnnotationFeature } from '../api';
import { listingParams } from '../api';
import {
  labelChoices,
  listedShapes,
  listingFilter,
  listSummary,
  matches,
  NO_FILTER,
  onSlice,
  seenValues,
  statusOf,
  upsertFeature,
  withoutFeature,
} from './annotationFilter';

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
  it('lists every shape (not the tags), ordered by slice then id', () => {
    expect(listedShapes(all).map((f) => f.id)).toEqual([1, 2, 3]);
  });

  it('a label matches itself and the labels below it, as the server decides', () => {
    const vehicles = all.filter((f) => matches(f, { ...NO_FILTER, label: 'vehicle' }));
    expect(vehicles.map((f) => f.id)).toEqual([3, 2]);
    expect(matches(all[0] as AnnotationFeature, { ...NO_FILTER, label: 'vehicle/car' })).toBe(true);
    expect(matches(all[0] as AnnotationFeature, { ...NO_FILTER, label: 'vehic' })).toBe(false);
  });

  it('combines author and status; a missing status is a draft', () => {
    const ids = (filter: Parameters<typeof matches>[1]): (string | number | undefined)[] =>
      listedShapes(all.filter((f) => matches(f, filter))).map((f) => f.id);
    expect(statusOf(all[2] as AnnotationFeature)).toBe('draft');
    expect(ids({ label: null, author: 'ann', status: 'draft' })).toEqual([2]);
    expect(ids({ label: null, author: 'ann', status: 'submitted' })).toEqual([3]);
    expect(ids({ label: 'building', author: 'ann', status: null })).toEqual([]);
  });

  it('becomes the listing parameters, each only when chosen', () => {
    expect(listingFilter(NO_FILTER)).toEqual({});
    expect(listingFilter({ label: 'vehicle', author: null, status: 'submitted' })).toEqual({ labels: ['vehicle'], statuses: ['submitted'] });
    const query = listingParams({ ...listingFilter({ label: 'a/b, c', author: 'ann', status: 'draft' }), cursor: '1000' });
    expect(query.toString()).toBe('crs=pixel&limit=1000&label=a%2Fb%2C+c&status=draft&author=ann&cursor=1000');
    expect(query.getAll('label')).toEqual(['a/b, c']); // one value, though it holds a comma
  });

  it('offers the project labels that shapes can have and the labels seen', () => {
    const taxonomy = [
      { name: 'vehicle', color: null },
      { name: 'vehicle/car', color: '#ff0000', kinds: ['polygon', 'mask'] },
      { name: 'cloudy', color: null, kinds: ['tag'] },
      { name: 'zebra', color: null, kinds: ['tag', 'point'] },
    ];
    const seen = seenValues(all);
    expect(seen.labels.sort()).toEqual(['building', 'vehicle', 'vehicle/car']); // not the tag's label
    expect([...new Set(seen.authors)].sort()).toEqual(['ann', 'rev']);
    expect(labelChoices(taxonomy, seen.labels)).toEqual(['building', 'vehicle', 'vehicle/car', 'zebra']);
    expect(labelChoices([], [])).toEqual([]);
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
