import { describe, expect, it } from 'vitest';

import type { ImageSummary } from '../api';
import { filterImages, groupByProject, imageKind, thumbnailContentSize, thumbnailUrl } from './imageCatalog';

function summary(id: string, name: string, project = 'default', kind = 'geotiff', modality?: string): ImageSummary {
  return { id, name, kind, width: 10, height: 10, project, ...(modality ? { modality } : {}) };
}

describe('imageKind', () => {
  it('tells maps, CT, MR, other DICOM and plain rasters apart', () => {
    expect(imageKind({ kind: 'geotiff' })).toBe('geo');
    expect(imageKind({ kind: 'dicom-volume', modality: 'CT' })).toBe('ct');
    expect(imageKind({ kind: 'dicom-multiframe', modality: 'mr' })).toBe('mr');
    expect(imageKind({ kind: 'dicom-image', modality: 'SM' })).toBe('dicom');
    expect(imageKind({ kind: 'dicom-image', modality: null })).toBe('dicom');
    for (const kind of ['tiff', 'ome-tiff', 'zarr']) expect(imageKind({ kind })).toBe('tiff');
  });
});

describe('thumbnailUrl', () => {
  it('is the z = 0 tile of the native pyramid, with the id escaped', () => {
    expect(thumbnailUrl({ id: 'a-utm' })).toBe('/api/v1/images/a-utm/tiles/0/0/0.png');
    expect(thumbnailUrl({ id: 'ct/1 2' })).toBe('/api/v1/images/ct%2F1%202/tiles/0/0/0.png');
  });
});

describe('filterImages', () => {
  const images = [
    summary('a', 'RGB.byte.tif'),
    summary('b', 'Poumon élargi'),
    summary('c-ct', 'ct_lung series'),
  ];

  it('keeps everything for an empty query', () => {
    expect(filterImages(images, '  ')).toEqual(images);
  });

  it('matches every word anywhere in the name or id, ignoring case and accents', () => {
    expect(filterImages(images, 'rgb').map((i) => i.id)).toEqual(['a']);
    expect(filterImages(images, 'ELARGI').map((i) => i.id)).toEqual(['b']);
    expect(filterImages(images, 'lung ct').map((i) => i.id)).toEqual(['c-ct']);
    expect(filterImages(images, 'c-ct').map((i) => i.id)).toEqual(['c-ct']);
    expect(filterImages(images, 'lung rgb')).toEqual([]);
  });
});

describe('groupByProject', () => {
  it('groups in the server order, then other projects by name, keeping the image order', () => {
    const images = [
      summary('1', 'x', 'zeta'),
      summary('2', 'y', 'default'),
      summary('3', 'z', 'alpha'),
      summary('4', 'w', 'default'),
    ];
    const groups = groupByProject(images, ['default', 'empty']);
    expect(groups.map((g) => [g.project, g.images.map((i) => i.id)])).toEqual([
      ['default', ['2', '4']],
      ['alpha', ['3']],
      ['zeta', ['1']],
    ]);
  });

  it('makes one group even when the server lists no project', () => {
    const groups = groupByProject([summary('1', 'x'), summary('2', 'y')]);
    expect(groups).toHaveLength(1);
    expect(groups[0]!.project).toBe('default');
  });
});

describe('thumbnailContentSize', () => {
  it('is the image shrunk by the power of two that fits one tile', () => {
    expect(thumbnailContentSize(600, 400, 256)).toEqual([150, 100]); // shrunk 4 times
    expect(thumbnailContentSize(200, 100, 256)).toEqual([200, 100]); // fits as it is
    expect(thumbnailContentSize(513, 512, 256)).toEqual([129, 128]); // 4 times, rounded up
    expect(thumbnailContentSize(512, 512, 256)).toEqual([256, 256]);
    expect(thumbnailContentSize(0, 0, 256)).toEqual([0, 0]);
  });
});
