import { describe, expect, it } from 'vitest';

import type { ImageDetail } from '../api';
import { imageExtent, planeImage, pyramidResolutions, pyramidTileGrid, toMapCoordinate, toPixel } from './pixelGrid';

describe('pyramidResolutions', () => {
  it('halves from the coarsest level down to one image pixel per screen pixel', () => {
    expect(pyramidResolutions(4)).toEqual([8, 4, 2, 1]);
    expect(pyramidResolutions(1)).toEqual([1]);
  });
});

describe('pixel map coordinates', () => {
  it('flip the row axis: the image covers [0, -height, width, 0]', () => {
    expect(imageExtent({ width: 600, height: 400 })).toEqual([0, -400, 600, 0]);
    expect(toMapCoordinate({ col: 12.5, row: 30.25 })).toEqual([12.5, -30.25]);
    expect(toPixel([12.5, -30.25])).toEqual({ col: 12.5, row: 30.25 });
  });
});

describe('pyramidTileGrid', () => {
  it("numbers tiles as the server does: z = 0 coarsest, y down from the top", () => {
    const grid = pyramidTileGrid({ id: 'x', width: 600, height: 400, levels: 3, tile_size: 256 });
    // Full resolution (z = 2): the pixel (col 500, row 300) is in tile x = 1, y = 1.
    expect(grid.getTileCoordForCoordAndZ([500, -300], 2)).toEqual([2, 1, 1]);
    // z = 0 fits the whole image in one tile.
    expect(grid.getTileCoordForCoordAndZ([599, -399], 0)).toEqual([0, 0, 0]);
    expect(grid.getTileCoordExtent([2, 1, 1])).toEqual([256, -512, 512, -256]);
  });
});

describe('planeImage', () => {
  it("takes a volume plane's own size, levels and spacing", () => {
    const volume = {
      id: 'ct',
      width: 512,
      height: 512,
      levels: 2,
      spacing: [0.7, 0.7, 2.5],
      planes: {
        coronal: {
          width: 512,
          height: 120,
          slices: 512,
          levels: 2,
          origin: [0, 0, 0],
          spacing: [0.7, 2.5, 0.7],
          direction: [
            [1, 0, 0],
            [0, 0, -1],
            [0, 1, 0],
          ],
        },
      },
    } as unknown as ImageDetail;
    const coronal = planeImage(volume, 'coronal');
    expect([coronal.width, coronal.height, coronal.spacing]).toEqual([512, 120, [0.7, 2.5, 0.7]]);
    expect(planeImage(volume, undefined)).toBe(volume);
  });
});
