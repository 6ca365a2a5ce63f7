/** The status bar: the image shown, the cursor in pixels (and in the image CRS), the zoom. */
import type { ImageDetail, PixelValue, PlaneInfo, PlaneName } from '../api';
import { getPixel, isGeoreferenced } from '../api';
import { crsLabel, isGeographic, pixelToCrs } from '../map/georef';
import type { PixelPoint } from '../map/pixelGrid';

const PIXEL_DIGITS = 2;

/** Degrees need more decimals than metres or feet to reach pixel precision. */
function formatCrs(value: number, geographic: boolean): string {
  return value.toFixed(geographic ? 7 : 2);
}

/** At most one pixel-value request per this many ms while the cursor moves. */
const VALUE_THROTTLE_MS = 120;

/** LPS mm of pixel position (col, row) on a slice of a plane (origin: centre of the first pixel). */
export function planeToPatient(plane: PlaneInfo, col: number, row: number, slice: number): [number, number, number] {
  const [o, sp, d] = [plane.origin, plane.spacing, plane.direction];
  const u = (col - 0.5) * sp[0];
  const v = (row - 0.5) * sp[1];
  const w = slice * sp[2];
  return [0, 1, 2].map((i) => o[i]! + u * d[0][i]! + v * d[1][i]! + w * d[2][i]!) as [number, number, number];
}

function formatValue(answer: PixelValue): string {
  if (!answer.valid || answer.value === null) return 'no data';
  const values = Array.isArray(answer.value) ? answer.value : [answer.value];
  const text = values
    .map((v) => (v === null ? '–' : String(Number(v.toFixed(Math.abs(v) >= 100 ? 1 : 2)))))
    .join(', ');
  return answer.unit ? `${text} ${answer.unit}` : text;
}

export class StatusBar {
  private image: ImageDetail | null = null;
  private volume: { plane: PlaneName; info: PlaneInfo; slice: number } | null = null;
  private pending: { col: number; row: number } | null = null;
  private timer: number | null = null;
  private lastRequest = 0;
  private request: AbortController | null = null;

  constructor(
    private readonly imageField: HTMLElement,
    private readonly pixelField: HTMLElement,
    private readonly crsField: HTMLElement,
    private readonly zoomField: HTMLElement,
    private readonly valueField: HTMLElement,
  ) {
    this.setImage(null);
  }

  setImage(image: ImageDetail | null): void {
    this.image = image;
    this.imageField.textContent = image
      ? `${image.name} · ${image.width.toLocaleString()} × ${image.height.toLocaleString()} px`
      : 'No image';
    this.crsField.hidden = !(image && isGeoreferenced(image));
    this.volume = null;
    this.setPointer(null);
  }

  /** The plane and slice shown, for a volume (patient coordinates and the pixel route). */
  setVolume(plane: PlaneName, info: PlaneInfo, slice: number): void {
    this.volume = { plane, info, slice };
    this.crsField.hidden = false;
    if (this.image) {
      this.imageField.textContent =
        `${this.image.name} · ${plane} ${slice + 1}/${info.slices} · ${info.width} × ${info.height} px`;
    }
    const col = Number(this.pixelField.dataset.col);
    const row = Number(this.pixelField.dataset.row);
    if (Number.isFinite(col) && Number.isFinite(row)) this.setPointer({ col, row });
    else this.setPointer(null);
  }

  private width(): number {
    return this.volume?.info.width ?? this.image?.width ?? 0;
  }

  private height(): number {
    return this.volume?.info.height ?? this.image?.height ?? 0;
  }

  /** Ask for the value under the cursor, at most once per VALUE_THROTTLE_MS (the latest wins). */
  private queueValue(point: { col: number; row: number } | null): void {
    this.pending = point;
    if (point === null) {
      this.request?.abort();
      this.valueField.textContent = '';
      this.valueField.hidden = true;
      delete this.valueField.dataset.state;
      return;
    }
    if (this.timer !== null) return;
    const wait = Math.max(0, this.lastRequest + VALUE_THROTTLE_MS - performance.now());
    this.timer = window.setTimeout(() => {
      this.timer = null;
      void this.fetchValue();
    }, wait);
  }

  private async fetchValue(): Promise<void> {
    const image = this.image;
    const point = this.pending;
    if (!image || !point) return;
    this.lastRequest = performance.now();
    this.request?.abort();
    const request = new AbortController();
    this.request = request;
    const volume = this.volume ? { slice: this.volume.slice, plane: this.volume.plane } : undefined;
    this.valueField.hidden = false;
    this.valueField.dataset.state = 'loading';
    try {
      const answer = await getPixel(image.id, point.col, point.row, volume, request.signal);
      if (request.signal.aborted) return;
      this.valueField.textContent = formatValue(answer);
      this.valueField.dataset.state = 'ok';
      this.valueField.dataset.col = String(point.col);
      this.valueField.dataset.row = String(point.row);
      if (volume) this.valueField.dataset.slice = String(volume.slice);
      else delete this.valueField.dataset.slice;
      this.valueField.dataset.value = JSON.stringify(answer.value);
      if (answer.lonlat && !volume) {
        const [lon, lat] = answer.lonlat;
        this.valueField.textContent += `  ·  lon ${lon.toFixed(6)}, lat ${lat.toFixed(6)}`;
      }
    } catch {
      if (request.signal.aborted) return;
      this.valueField.textContent = 'value –';
      this.valueField.dataset.state = 'error';
    }
  }

  /** Cursor position: col and row from the top-left corner of the top-left pixel. */
  setPointer(point: PixelPoint | null): void {
    const image = this.image;
    if (!image || !point) {
      this.pixelField.textContent = 'col –, row –';
      delete this.pixelField.dataset.col;
      delete this.pixelField.dataset.row;
      if (image && isGeoreferenced(image)) this.crsField.textContent = `${crsLabel(image.crs)} –`;
      if (this.volume) this.crsField.textContent = 'LPS –';
      this.queueValue(null);
      return;
    }
    const { col, row } = point;
    const outside = col < 0 || row < 0 || col >= this.width() || row >= this.height();
    this.pixelField.textContent = `col ${col.toFixed(PIXEL_DIGITS)}, row ${row.toFixed(PIXEL_DIGITS)}`;
    this.pixelField.classList.toggle('outside', outside);
    this.pixelField.dataset.col = String(col);
    this.pixelField.dataset.row = String(row);
    if (isGeoreferenced(image)) {
      const geographic = isGeographic(image.crs);
      const [x, y] = pixelToCrs(image.transform, point);
      // GDAL's x and y of a longitude/latitude CRS are longitude and latitude.
      const [xName, yName] = geographic ? ['lon', 'lat'] : ['x', 'y'];
      this.crsField.textContent =
        `${crsLabel(image.crs)}  ${xName} ${formatCrs(x, geographic)}, ${yName} ${formatCrs(y, geographic)}`;
      this.crsField.dataset.x = String(x);
      this.crsField.dataset.y = String(y);
    }
    if (this.volume) {
      const [x, y, z] = planeToPatient(this.volume.info, col, row, this.volume.slice);
      this.crsField.textContent = `LPS  x ${x.toFixed(1)}, y ${y.toFixed(1)}, z ${z.toFixed(1)} mm`;
      this.crsField.dataset.x = String(x);
      this.crsField.dataset.y = String(y);
      this.crsField.dataset.z = String(z);
    }
    this.queueValue(outside ? null : point);
  }

  /** `resolution` is image pixels per screen pixel; shown as a percentage of full size. */
  setResolution(resolution: number): void {
    const percent = 100 / resolution;
    this.zoomField.textContent = `${percent >= 10 ? Math.round(percent) : percent.toFixed(1)} %`;
  }
}
