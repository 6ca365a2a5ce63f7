/**
 * The image's own pixel space as an OpenLayers projection and tile grid.
 *
 * Map coordinates are image pixels with the y axis flipped: map `[x, y]` is pixel
 * `(col = x, row = -y)`, so the image covers `[0, -height, width, 0]` and its top-left corner
 * is the origin. Keeping pixels as map units lets annotations be stored in image pixels later
 * without any reprojection.
 */
import type { Coordinate } from 'ol/coordinate';
import type { Extent } from 'ol/extent';
import Projection from 'ol/proj/Projection';
import TileGrid from 'ol/tilegrid/TileGrid';

import type { ImageDetail, PlaneName } from '../api';
import { metresAlongRow } from './georef';

type ImageShape = Pick<ImageDetail, 'id' | 'width' | 'height' | 'levels' | 'tile_size'>;

/** Pixel position with the origin at the top-left corner of the top-left pixel. */
export interface PixelPoint {
  col: number;
  row: number;
}

export function imageExtent(image: Pick<ImageDetail, 'width' | 'height'>): Extent {
  return [0, -image.height, image.width, 0];
}

export function toPixel(coordinate: Coordinate): PixelPoint {
  return { col: coordinate[0] ?? NaN, row: -(coordinate[1] ?? NaN) };
}

export function toMapCoordinate(point: PixelPoint): Coordinate {
  return [point.col, -point.row];
}

/**
 * One projection per image (its code carries the id, so OL's projection cache never mixes two
 * images). Where a pixel has a ground size the point resolution is in metres, which is what the
 * scale line shows (at the view's centre: a degree of longitude depends on the latitude);
 * otherwise there is no ground unit.
 */
export function pixelProjection(image: ImageDetail): Projection {
  const hasGroundSize = metresAlongRow(image) !== null;
  return new Projection({
    code: `tessera-pixels:${image.id}:${image.width}x${image.height}`,
    units: 'pixels',
    extent: imageExtent(image),
    ...(hasGroundSize
      ? {
          getPointResolution: (resolution: number, point: Coordinate) =>
            resolution * (metresAlongRow(image, toPixel(point)) ?? NaN),
        }
      : {}),
  });
}

/** Resolutions (image pixels per screen pixel) of the native pyramid, coarsest first. */
export function pyramidResolutions(levels: number): number[] {
  return Array.from({ length: levels }, (_, z) => 2 ** (levels - 1 - z));
}

/**
 * The server's native pyramid: z = 0 is the coarsest level, z = levels - 1 full resolution,
 * tiles counted from the top-left corner (x right, y down), `tile_size` px each.
 */
export function pyramidTileGrid(image: ImageShape): TileGrid {
  return new TileGrid({
    origin: [0, 0],
    extent: imageExtent(image),
    resolutions: pyramidResolutions(image.levels),
    tileSize: image.tile_size,
  });
}

/**
 * A volume seen in one plane: the plane's own width, height, pyramid levels and spacing (the
 * coronal and sagittal grids differ from the acquisition grid). Other images are returned as is.
 */
export function planeImage(image: ImageDetail, plane: PlaneName | undefined): ImageDetail {
  const info = plane ? image.planes?.[plane] : undefined;
  if (!info) return image;
  return { ...image, width: info.width, height: info.height, levels: info.levels, spacing: info.spacing };
}
