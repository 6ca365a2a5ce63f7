/** Pixel ↔ CRS arithmetic for georeferenced images (the server's affine geotransform). */
import type { CrsInfo, GeoTransform, ImageDetail } from '../api';
import { isGeoreferenced } from '../api';
import type { PixelPoint } from './pixelGrid';

/** `x = a*col + b*row + c`, `y = d*col + e*row + f`. */
export function pixelToCrs(transform: GeoTransform, point: PixelPoint): [number, number] {
  const [a, b, c, d, e, f] = transform;
  return [a * point.col + b * point.row + c, d * point.col + e * point.row + f];
}

/** The inverse mapping; null when the transform is degenerate. */
export function crsToPixel(transform: GeoTransform, x: number, y: number): PixelPoint | null {
  const [a, b, c, d, e, f] = transform;
  const det = a * e - b * d;
  if (det === 0) return null;
  const dx = x - c;
  const dy = y - f;
  return { col: (e * dx - b * dy) / det, row: (a * dy - d * dx) / det };
}

/** "EPSG:32618", or a short name read from the WKT, or "CRS". */
export function crsLabel(crs: CrsInfo): string {
  if (crs.epsg != null) return `EPSG:${crs.epsg}`;
  const name = /^\s*\w+\s*\[\s*"([^"]+)"/.exec(crs.wkt)?.[1];
  return name ?? 'CRS';
}

/** Whether the CRS's coordinates are longitude/latitude degrees. */
export function isGeographic(crs: CrsInfo): boolean {
  return /^\s*(GEOGCS|GEOGCRS|GEOGRAPHICCRS|GEODCRS)\s*\[/i.test(crs.wkt);
}

/** Whether the CRS is projected with metre units (so a pixel has a ground size in metres). */
function isProjectedMetres(wkt: string): boolean {
  const projected = /^\s*(PROJCS|PROJCRS|PROJECTEDCRS)\s*\[/i.test(wkt);
  // WKT1 ends with the CRS's own UNIT; WKT2 names the axis unit LENGTHUNIT["metre",1].
  return projected && /UNIT\s*\[\s*"(metre|meter|m)"\s*,\s*1(\.0*)?\s*[\],]/i.test(wkt);
}

/** WGS84 ellipsoid: semi-major axis (m) and first eccentricity squared. */
const WGS84_A = 6_378_137;
const WGS84_E2 = (1 / 298.257223563) * (2 - 1 / 298.257223563);

/**
 * Metres spanned by one degree of longitude and of latitude at a latitude (degrees), on the
 * WGS84 ellipsoid (the radii of curvature along the parallel and along the meridian).
 */
export function metresPerDegree(latitude: number): { lon: number; lat: number } {
  const phi = (Math.max(-90, Math.min(90, latitude)) * Math.PI) / 180;
  const w = 1 - WGS84_E2 * Math.sin(phi) ** 2;
  const perRadian = Math.PI / 180;
  return {
    lon: perRadian * ((WGS84_A * Math.cos(phi)) / Math.sqrt(w)),
    lat: perRadian * ((WGS84_A * (1 - WGS84_E2)) / w ** 1.5),
  };
}

function positiveOrNull(size: number): number | null {
  return Number.isFinite(size) && size > 0 ? size : null;
}

/**
 * Ground distance in metres of one pixel step along a row (col + 1), which is what a horizontal
 * scale bar measures on the screen, or null when the image has no ground unit:
 * - volumes: the column spacing of the plane shown (mm; see planeImage, each plane has its own);
 * - projected CRSs in metres: the transform's step along a row;
 * - longitude/latitude CRSs: that step in degrees times the metres of a degree at the latitude
 *   of `at` (default: the image's centre), since a degree of longitude shrinks towards the poles.
 */
export function metresAlongRow(image: ImageDetail, at?: PixelPoint | null): number | null {
  if (image.planes && image.spacing) return positiveOrNull(image.spacing[0] / 1000);
  if (!isGeoreferenced(image)) return null;
  const [a, , , d] = image.transform;
  if (isProjectedMetres(image.crs.wkt)) return positiveOrNull(Math.hypot(a, d));
  if (!isGeographic(image.crs)) return null;
  const point = at && Number.isFinite(at.col) && Number.isFinite(at.row) ? at : { col: image.width / 2, row: image.height / 2 };
  const [, latitude] = pixelToCrs(image.transform, point);
  const metres = metresPerDegree(latitude);
  return positiveOrNull(Math.hypot(a * metres.lon, d * metres.lat));
}

/** Ground size of one pixel in metres at the image's centre, or null if unknown. */
export function metersPerPixel(image: ImageDetail): number | null {
  return metresAlongRow(image);
}
