/** The sidebar's facts about the image shown. */
import type { ImageDetail } from '../api';
import { isGeoreferenced } from '../api';
import { crsLabel, metersPerPixel } from '../map/georef';
import { el } from './dom';

export function renderImageInfo(root: HTMLElement, image: ImageDetail | null): void {
  if (!image) {
    root.replaceChildren();
    root.hidden = true;
    return;
  }
  const rows: [string, string][] = [
    ['Size', `${image.width.toLocaleString()} × ${image.height.toLocaleString()} px`],
    ['Type', `${image.dtype}, ${image.bands} band${image.bands === 1 ? '' : 's'}`],
    ['Pyramid', `${image.levels} level${image.levels === 1 ? '' : 's'} of ${image.tile_size} px tiles`],
  ];
  if (isGeoreferenced(image)) {
    rows.push(['CRS', crsLabel(image.crs)]);
    const size = metersPerPixel(image);
    if (size !== null) rows.push(['Pixel', `${size.toPrecision(4)} m`]);
  }
  root.replaceChildren(
    el('h2', { className: 'sidebar-heading', text: 'Image' }),
    el(
      'dl',
      { className: 'info-list' },
      rows.flatMap(([term, value]) => [el('dt', { text: term }), el('dd', { text: value })]),
    ),
    ...(image.warnings ?? []).map((w) => el('p', { className: 'info-warning', text: w })),
  );
  root.hidden = false;
}
