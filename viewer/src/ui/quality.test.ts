import { describe, expect, it } from 'vitest';

import type { Finding } from './quality';
import { checksParams, codeChoices, countsSummary, findingExtent, findingKey, relatedIds } from './quality';

const finding = (over: Partial<Finding> = {}): Finding => ({
  code: 'duplicate',
  severity: 'error',
  message: 'm',
  image: 'cog',
  annotation: 17,
  label: 'building',
  author: 'ann',
  kind: 'polygon',
  location: { pixel_bbox: [100, 200, 140, 260], pixel_centroid: [120, 230] },
  details: { duplicate_of: 12, also_duplicates: [9], iou: 0.98 },
  ...over,
});

describe('checks query', () => {
  it('has the image, repeated codes, the severity, limit and cursor', () => {
    const p = checksParams({ image: 'a b', codes: ['tiny', 'duplicate'], severity: 'error', cursor: 'abc', limit: 50 });
    expect(p.getAll('image')).toEqual(['a b']);
    expect(p.getAll('code')).toEqual(['tiny', 'duplicate']);
    expect(p.get('severity')).toBe('error');
    expect(p.get('limit')).toBe('50');
    expect(p.get('cursor')).toBe('abc');
    expect(p.toString()).toBe('image=a+b&code=tiny&code=duplicate&severity=error&limit=50&cursor=abc');
  });

  it('leaves out what is not filtered', () => {
    const p = checksParams({ image: 'x', codes: [], severity: null, cursor: null });
    expect(p.toString()).toBe('image=x');
  });
});

describe('finding extent', () => {
  it('is the bbox in map coordinates (y negated) with a quarter of the larger side as margin', () => {
    // 40 x 60: margin 15 -> at least 16.
    expect(findingExtent(finding())).toEqual([84, -276, 156, -184]);
    const big = finding({ location: { pixel_bbox: [0, 0, 400, 100], pixel_centroid: [200, 50] } });
    expect(findingExtent(big)).toEqual([-100, -200, 500, 100]);
  });

  it('gives a point at least the minimum margin, and its centre stays the centroid', () => {
    const point = finding({ location: { pixel_bbox: [50.25, 60.5, 50.25, 60.5], pixel_centroid: [50.25, 60.5] } });
    const e = findingExtent(point, 0.25, 16);
    expect(e).toEqual([34.25, -76.5, 66.25, -44.5]);
    const [x0, y0, x1, y1] = e ?? [0, 0, 0, 0];
    expect([(x0 + x1) / 2, -(y0 + y1) / 2]).toEqual([50.25, 60.5]);
  });

  it('is null without a usable bbox', () => {
    expect(findingExtent(finding({ location: null }))).toBeNull();
    expect(findingExtent(finding({ location: { pixel_bbox: null, pixel_centroid: null } }))).toBeNull();
    expect(findingExtent(finding({ location: { pixel_bbox: [0, 0, Number.NaN, 1], pixel_centroid: null } }))).toBeNull();
  });
});

describe('related annotations', () => {
  it('names what a duplicate duplicates and what an overlap overlaps', () => {
    expect(relatedIds(finding())).toEqual([12, 9]);
    expect(relatedIds(finding({ code: 'overlap', details: { other: 5, iou: 0.6 } }))).toEqual([5]);
    expect(relatedIds(finding({ code: 'tiny', details: { area_px: 1 } }))).toEqual([]);
    expect(relatedIds(finding({ details: { duplicate_of: 'x' } }))).toEqual([]);
  });

  it('keys a finding by image, annotation, code and other annotation', () => {
    expect(findingKey(finding())).toBe('cog/17/duplicate/12');
    expect(findingKey(finding({ code: 'tiny', details: {}, annotation: null }))).toBe('cog/-/tiny/');
  });
});

describe('counts', () => {
  it('summarises severities and the annotations checked', () => {
    expect(countsSummary({ severities: { error: 3, warning: 1 }, total: 4, checked: 120 })).toBe(
      '3 errors · 1 warning (120 annotations checked)',
    );
    expect(countsSummary({ severities: {}, total: 0, checked: 1 })).toBe('No findings (1 annotation checked)');
  });

  it('offers the codes counted first, then the known ones, and keeps the chosen one', () => {
    const choices = codeChoices({ tiny: 1, duplicate: 2 }, 'made_up');
    expect(choices.slice(0, 2)).toEqual(['duplicate', 'tiny']);
    expect(choices).toContain('sliver');
    expect(choices).toContain('made_up');
    expect(new Set(choices).size).toBe(choices.length);
  });
});
