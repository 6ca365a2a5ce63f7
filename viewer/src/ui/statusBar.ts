/** The status bar: the image shown, the cursor in pixels (and in the image CRS), the zoom. */
import type { ImageDetail } from '../api';
import { isGeoreferenced } from '../api';
import { crsLabel, isGeographic, pixelToCrs } from '../map/georef';
import type { PixelPoint } from '../map/pixelGrid';

const PIXEL_DIGITS = 2;

/** Degrees need more decimals than metres or feet to reach pixel precision. */
function formatCrs(value: number, geographic: boolean): string {
  return value.toFixed(geographic ? 7 : 2);
}

export class StatusBar {
  private image: ImageDetail | null = null;

  constructor(
    private readonly imageField: HTMLElement,
    private readonly pixelField: HTMLElement,
    private readonly crsField: HTMLElement,
    private readonly zoomField: HTMLElement,
  ) {
    this.setImage(null);
  }

  setImage(image: ImageDetail | null): void {
    this.image = image;
    this.imageField.textContent = image
      ? `${image.name} · ${image.width.toLocaleString()} × ${image.height.toLocaleString()} px`
      : 'No image';
    this.crsField.hidden = !(image && isGeoreferenced(image));
    this.setPointer(null);
  }

  /** Cursor position: col and row from the top-left corner of the top-left pixel. */
  setPointer(point: PixelPoint | null): void {
    const image = this.image;
    if (!image || !point) {
      this.pixelField.textContent = 'col –, row –';
      delete this.pixelField.dataset.col;
      delete this.pixelField.dataset.row;
      if (image && isGeoreferenced(image)) this.crsField.textContent = `${crsLabel(image.crs)} –`;
      return;
    }
    const { col, row } = point;
    const outside = col < 0 || row < 0 || col > image.width || row > image.height;
    this.pixelField.textContent = `col ${col.toFixed(PIXEL_DIGITS)}, row ${row.toFixed(PIXEL_DIGITS)}`;
    this.pixelField.classList.toggle('outside', outside);
    this.pixelField.dataset.col = String(col);
    this.pixelField.dataset.row = String(row);
    if (isGeoreferenced(image)) {
      const geographic = isGeographic(image.crs);
      const [x, y] = pixelToCrs(image.transform, point);
      this.crsField.textContent =
        `${crsLabel(image.crs)}  x ${formatCrs(x, geographic)}, y ${formatCrs(y, geographic)}`;
      this.crsField.dataset.x = String(x);
      this.crsField.dataset.y = String(y);
    }
  }

  /** `resolution` is image pixels per screen pixel; shown as a percentage of full size. */
  setResolution(resolution: number): void {
    const percent = 100 / resolution;
    this.zoomField.textContent = `${percent >= 10 ? Math.round(percent) : percent.toFixed(1)} %`;
  }
}
