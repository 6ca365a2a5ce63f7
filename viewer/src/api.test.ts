import { describe, expect, it } from 'vitest';

import { listingParams } from './api';

describe('listing query', () => {
  it('pages of 1,000 in pixels, all of the image, when nothing else is asked', () => {
    expect(listingParams({}).toString()).toBe('crs=pixel&limit=1000');
  });

  it('a bbox and a volume slice, then the filters, each value repeated, then the cursor', () => {
    const params = listingParams({
      bbox: [0, 10.5, 300, 200.25],
      volume: { slice: 7, plane: 'coronal' },
      labels: ['road', 'field'],
      statuses: ['submitted', 'draft'],
      kinds: ['tag'],
      limit: 50,
      cursor: '1234',
    });
    expect(params.get('bbox')).toBe('0.000,10.500,300.000,200.250');
    expect([params.get('slice'), params.get('plane'), params.get('limit'), params.get('cursor')]).toEqual(['7', 'coronal', '50', '1234']);
    expect(params.getAll('label')).toEqual(['road', 'field']);
    expect(params.getAll('status')).toEqual(['submitted', 'draft']);
    expect(params.getAll('kind')).toEqual(['tag']);
    expect(params.has('author')).toBe(false);
  });

  it('an empty filter list or a null cursor adds nothing', () => {
    expect(listingParams({ labels: [], authors: [], cursor: null }).toString()).toBe('crs=pixel&limit=1000');
  });
});
