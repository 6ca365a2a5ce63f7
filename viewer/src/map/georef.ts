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

/** Ground size of one pixel in metres (geometric mean of the axes), or null if unknown. */
export function metersPerPixel(image: ImageDetail): number | null {
  // Volumes: the in-plane spacing in millimetres (the plane's own, see planeImage).
  if (image.planes && image.spacing) {
    const size = Math.sqrt(image.spacing[0] * image.spacing[1]) / 1000;
    return Number.isFinite(size) && size > 0 ? size : null;
  }
  if (!isGeoreferenced(image) || !isProjectedMetres(image.crs.wkt)) return null;
  const [a, b, , d, e] = image.transform;
  const size = Math.sqrt(Math.abs(a * e - b * d));
  return Number.isFinite(size) && size > 0 ? size : null;
}
