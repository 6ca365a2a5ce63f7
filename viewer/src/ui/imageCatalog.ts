/**
 * The pure part of the image list: what kind of image each is, its thumbnail, the search filter
 * and the grouping by project. Kept apart from the DOM so it can be unit tested.
 */
import type { ImageSummary } from '../api';
import { tileUrl } from '../api';

/** The icon shown for an image: a map, a CT or MR scan, other DICOM, or a plain raster. */
export type ImageKind = 'geo' | 'ct' | 'mr' | 'dicom' | 'tiff';

export const KIND_LABELS: Record<ImageKind, { short: string; long: string }> = {
  geo: { short: 'GEO', long: 'Georeferenced raster' },
  ct: { short: 'CT', long: 'CT (DICOM)' },
  mr: { short: 'MR', long: 'MR (DICOM)' },
  dicom: { short: 'DCM', long: 'DICOM' },
  tiff: { short: 'TIFF', long: 'Raster without georeference' },
};

/** `kind` is the server's format (geotiff, tiff, ome-tiff, zarr, dicom-*); DICOM adds `modality`. */
export function imageKind(image: Pick<ImageSummary, 'kind' | 'modality'>): ImageKind {
  if (image.kind === 'geotiff') return 'geo';
  if (image.kind.startsWith('dicom')) {
    const modality = (image.modality ?? '').toUpperCase();
    if (modality === 'CT') return 'ct';
    if (modality === 'MR') return 'mr';
    return 'dicom';
  }
  return 'tiff';
}

/** The whole image in one tile: z = 0 of the native pyramid (the default slice of a volume). */
export function thumbnailUrl(image: Pick<ImageSummary, 'id'>): string {
  return tileUrl(image.id, 0, 0, 0);
}

/**
 * The images whose name (or id) contains every word of the query, ignoring case and accents;
 * an empty query keeps them all. Order is kept.
 */
export function filterImages<T extends Pick<ImageSummary, 'id' | 'name'>>(images: readonly T[], query: string): T[] {
  const words = fold(query).split(/\s+/).filter(Boolean);
  if (words.length === 0) return [...images];
  return images.filter((image) => {
    const text = `${fold(image.name)} ${fold(image.id)}`;
    return words.every((word) => text.includes(word));
  });
}

function fold(text: string): string {
  return text.normalize('NFKD').replace(/\p{Diacritic}/gu, '').toLowerCase();
}

export interface ProjectGroup<T> {
  project: string;
  images: T[];
}

/**
 * Images grouped by project: the projects in the order the server lists them, then any other
 * project an image names (alphabetically); empty projects are left out. Order within a group is
 * kept.
 */
export function groupByProject<T extends Pick<ImageSummary, 'project'>>(
  images: readonly T[],
  projectOrder: readonly string[] = [],
): ProjectGroup<T>[] {
  const groups = new Map<string, T[]>();
  for (const image of images) {
    const project = image.project || 'default';
    const group = groups.get(project);
    if (group) group.push(image);
    else groups.set(project, [image]);
  }
  const known = projectOrder.filter((name) => groups.has(name));
  const others = [...groups.keys()].filter((name) => !projectOrder.includes(name)).sort();
  return [...new Set([...known, ...others])].map((project) => ({ project, images: groups.get(project) ?? [] }));
}

/**
 * The part of the z = 0 tile the image covers, in tile pixels: level 0 is the full image shrunk
 * by the power of two that fits its longest side in one tile (the server pads the rest).
 */
export function thumbnailContentSize(width: number, height: number, tileSize: number): [number, number] {
  const longest = Math.max(width, height);
  if (!(longest > 0) || !(tileSize > 0)) return [0, 0];
  const factor = 2 ** Math.max(0, Math.ceil(Math.log2(longest / tileSize)));
  return [Math.ceil(width / factor), Math.ceil(height / factor)];
}
