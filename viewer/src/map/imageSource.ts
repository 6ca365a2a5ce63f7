/** The tile source for one image's native pyramid. */
import type { TileCoord } from 'ol/tilecoord';
import TileImage from 'ol/source/TileImage';

import type { ImageDetail, TileOptions } from '../api';
import { tileQuery, tileUrl } from '../api';
import { pixelProjection, pyramidTileGrid } from './pixelGrid';

/**
 * OL's tile coordinates on a grid whose origin is the top-left corner are `[z, x, y]` with y
 * counting down from the top, exactly the server's `{z}/{x}/{y}`, and z indexes the grid's
 * resolutions, which are the server's levels. The grid's extent keeps requests inside the image.
 */
function urlFunction(image: ImageDetail, options: TileOptions) {
  return (tileCoord: TileCoord): string | undefined => {
    const [z = -1, x = -1, y = -1] = tileCoord;
    if (z < 0 || z >= image.levels || x < 0 || y < 0) return undefined;
    return tileUrl(image.id, z, x, y, options);
  };
}

export class ImageTileSource extends TileImage {
  readonly image: ImageDetail;

  constructor(image: ImageDetail, options: TileOptions = {}) {
    super({
      projection: pixelProjection(image),
      tileGrid: pyramidTileGrid(image),
      tileUrlFunction: urlFunction(image, options),
      // The session cookie goes along on same-origin image requests; no CORS needed.
      crossOrigin: null,
      transition: 150,
      wrapX: false,
      interpolate: true,
      key: tileQuery(options),
    });
    this.image = image;
  }

  /** Re-render with other rendering options (bands, rescale); tiles reload under a new key. */
  setTileOptions(options: TileOptions): void {
    this.setTileUrlFunction(urlFunction(this.image, options), tileQuery(options));
  }
}
