/**
 * The WebMercator mode of a georeferenced image: the server's WebMercatorQuad tiles in an
 * EPSG:3857 view (over an optional XYZ basemap), and the maps between that view and the image's
 * pixels, which the status bar and the zoom read-out need. The image's own CRS is handled by
 * proj4 from the WKT the server sends (EPSG:4326 and EPSG:3857 need no parsing).
 */
import type { Coordinate } from 'ol/coordinate';
import type { Extent } from 'ol/extent';
import { transformExtent } from 'ol/proj';
import proj4 from 'proj4';

import type { BoundsWgs84, GeoImageDetail, TileOptions } from '../api';
import { tileQuery } from '../api';
import { crsToPixel, pixelToCrs } from './georef';
import type { PixelPoint } from './pixelGrid';

export const WEB_MERCATOR = 'EPSG:3857';

/** Radius of the WebMercator sphere (EPSG:3857), metres. */
const MERCATOR_RADIUS = 6_378_137;

/** XYZ URL template of the image's WebMercatorQuad tiles, with the rendering options. */
export function mercatorTileTemplate(imageId: string, options: TileOptions = {}): string {
  return `/api/v1/images/${encodeURIComponent(imageId)}/tiles/WebMercatorQuad/{z}/{x}/{y}.png${tileQuery(options)}`;
}

/** `[west, south, east, north]` degrees as an EPSG:3857 extent. */
export function boundsToMercator(bounds: BoundsWgs84): Extent {
  return transformExtent(bounds, 'EPSG:4326', WEB_MERCATOR);
}

/** Spherical Mercator, as EPSG:3857 defines it (lon/lat degrees <-> metres). */
export function lonLatToMercator(lon: number, lat: number): [number, number] {
  const phi = (Math.max(-85.0511287798, Math.min(85.0511287798, lat)) * Math.PI) / 180;
  return [(MERCATOR_RADIUS * lon * Math.PI) / 180, MERCATOR_RADIUS * Math.log(Math.tan(Math.PI / 4 + phi / 2))];
}

export function mercatorToLonLat(x: number, y: number): [number, number] {
  const lon = (x / MERCATOR_RADIUS) * (180 / Math.PI);
  const lat = (2 * Math.atan(Math.exp(y / MERCATOR_RADIUS)) - Math.PI / 2) * (180 / Math.PI);
  return [lon, lat];
}

/** Image pixels <-> EPSG:3857, through the image CRS. */
export interface MercatorFrame {
  toMercator(point: PixelPoint): [number, number] | null;
  toPixel(coordinate: Coordinate): PixelPoint | null;
}

type CrsMap = { forward: (xy: [number, number]) => [number, number]; inverse: (xy: [number, number]) => [number, number] };

/** The image CRS <-> EPSG:3857, or null when proj4 cannot read the CRS. */
function crsToMercator(image: GeoImageDetail): CrsMap | null {
  const epsg = image.crs.epsg;
  if (epsg === 3857) return { forward: (xy) => xy, inverse: (xy) => xy };
  if (epsg === 4326) {
    // GDAL's transform for EPSG:4326 gives x = longitude, y = latitude.
    return {
      forward: ([lon, lat]) => lonLatToMercator(lon, lat),
      inverse: ([x, y]) => mercatorToLonLat(x, y),
    };
  }
  try {
    const converter = proj4(image.crs.wkt, WEB_MERCATOR);
    return {
      forward: (xy) => converter.forward(xy) as [number, number],
      inverse: (xy) => converter.inverse(xy) as [number, number],
    };
  } catch {
    return null;
  }
}

export function mercatorFrame(image: GeoImageDetail): MercatorFrame | null {
  const crs = crsToMercator(image);
  if (!crs) return null;
  const finite = (xy: [number, number]): boolean => Number.isFinite(xy[0]) && Number.isFinite(xy[1]);
  return {
    toMercator(point) {
      const out = crs.forward(pixelToCrs(image.transform, point));
      return finite(out) ? out : null;
    },
    toPixel(coordinate) {
      const [x = NaN, y = NaN] = coordinate;
      const inCrs = crs.inverse([x, y]);
      if (!finite(inCrs)) return null;
      return crsToPixel(image.transform, inCrs[0], inCrs[1]);
    },
  };
}

/**
 * EPSG:3857 metres spanned by one image pixel along a row at `point` (the image centre by
 * default): divides a view resolution into image pixels per screen pixel.
 */
export function mercatorPixelSize(frame: MercatorFrame, image: GeoImageDetail, point?: PixelPoint): number | null {
  const at = point ?? { col: image.width / 2, row: image.height / 2 };
  const a = frame.toMercator(at);
  const b = frame.toMercator({ col: at.col + 1, row: at.row });
  if (!a || !b) return null;
  const size = Math.hypot(b[0] - a[0], b[1] - a[1]);
  return Number.isFinite(size) && size > 0 ? size : null;
}

/**
 * Why an XYZ basemap URL template cannot be used, or null when it can: an absolute http(s) URL
 * or a path on this server, with `{z}`, `{x}` and `{y}` (or `{-y}`) placeholders. The server
 * checks `tessera serve --basemap` by the same rules.
 */
export function basemapUrlProblem(url: string): string | null {
  const text = url.trim();
  if (text === '') return 'Give a URL.';
  if (!/^https?:\/\/[^/]+/i.test(text) && !text.startsWith('/')) return 'Start with http://, https:// or /.';
  const missing = ['{z}', '{x}', '{y}'].filter((p) => !text.replace('{-y}', '{y}').includes(p));
  return missing.length > 0 ? `Missing ${missing.join(', ')}.` : null;
}
