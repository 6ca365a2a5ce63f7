/**
 * Rendering options for the image shown: a min/max stretch for images that are not 8-bit and a
 * band → RGB selector for images with three or more bands (each change yields TileOptions), and
 * for georeferenced images the map mode: their own pixels, or WebMercator over the basemap.
 */
import type { ImageDetail, TileOptions } from '../api';
import { isGeoreferenced } from '../api';
import type { MapMode } from '../map/ImageViewer';
import { basemapUrlProblem } from '../map/mercator';
import { el } from './dom';

const MAP_MODES: { mode: MapMode; label: string }[] = [
  { mode: 'pixels', label: 'Pixels' },
  { mode: 'webmercator', label: 'WebMercator' },
];

/** Whether an image can be shown in the WebMercator mode (the server has its WGS84 bounds). */
export function canShowMercator(image: ImageDetail): boolean {
  return isGeoreferenced(image) && Array.isArray(image.bounds_wgs84) && image.bounds_wgs84.length === 4;
}

/** The map mode shown, and the basemap: the server's (`serve --basemap`) or this browser's. */
export interface MapModeState {
  mode: MapMode;
  basemap: { url: string; from: 'server' | 'browser' } | null;
}

const CHANNELS = ['R', 'G', 'B'] as const;

export function needsRescale(image: ImageDetail): boolean {
  return image.dtype !== 'uint8';
}

export function hasBandChoice(image: ImageDetail): boolean {
  return image.bands >= 3;
}

export class RenderControls {
  private options: TileOptions = {};

  constructor(
    private readonly root: HTMLElement,
    private readonly onChange: (options: TileOptions) => void,
    private readonly onMapMode: (mode: MapMode) => void = () => undefined,
    /** A basemap URL saved in this browser (null: back to the server's). */
    private readonly onBasemap: (url: string | null) => void = () => undefined,
  ) {
    this.root.hidden = true;
  }

  /** Show the controls that apply to `image`, starting from `options` (and the map mode). */
  setImage(image: ImageDetail | null, options: TileOptions = {}, map: MapModeState | null = null): void {
    this.options = { ...options };
    const sections: HTMLElement[] = [];
    if (image && map && canShowMercator(image)) sections.push(this.mapSection(map));
    if (image && needsRescale(image)) sections.push(this.rescaleSection(image));
    if (image && hasBandChoice(image)) sections.push(this.bandSection(image));
    this.root.replaceChildren(...sections);
    this.root.hidden = sections.length === 0;
  }

  private emit(patch: Partial<TileOptions>): void {
    this.options = { ...this.options, ...patch };
    this.onChange({ ...this.options });
  }

  private rescaleSection(image: ImageDetail): HTMLElement {
    const start = this.options.rescale ?? image.default_rescale?.[0];
    const input = (name: string, label: string, value: number | undefined): HTMLInputElement =>
      el('input', {
        className: 'field-input',
        attrs: {
          type: 'number',
          step: 'any',
          name,
          'aria-label': label,
          placeholder: label,
          required: '',
          ...(value !== undefined ? { value: String(value) } : {}),
        },
      });
    const min = input('rescale-min', 'min', start?.[0]);
    const max = input('rescale-max', 'max', start?.[1]);
    const error = el('p', { className: 'field-error', attrs: { 'aria-live': 'polite' } });
    const apply = el('button', { className: 'btn btn-primary', text: 'Apply', attrs: { type: 'submit' } });
    const reset = el('button', { className: 'btn', text: 'Reset', attrs: { type: 'button' } });
    const form = el('form', { className: 'control-form', attrs: { id: 'rescale-form' } }, [
      el('div', { className: 'field-row' }, [min, el('span', { className: 'field-sep', text: '–' }), max]),
      el('div', { className: 'field-row' }, [apply, reset]),
      error,
    ]);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const lo = min.valueAsNumber;
      const hi = max.valueAsNumber;
      if (!Number.isFinite(lo) || !Number.isFinite(hi) || hi <= lo) {
        error.textContent = 'Give numbers with max above min.';
        return;
      }
      error.textContent = '';
      this.emit({ rescale: [lo, hi] });
    });
    reset.addEventListener('click', () => {
      const initial = image.default_rescale?.[0];
      min.value = initial ? String(initial[0]) : '';
      max.value = initial ? String(initial[1]) : '';
      error.textContent = '';
      this.emit({ rescale: undefined });
    });
    return this.section('Rescale min / max', `Stretch ${image.dtype} values to the display range.`, form);
  }

  private bandSection(image: ImageDetail): HTMLElement {
    const current = this.options.bands?.length === 3 ? this.options.bands : [1, 2, 3];
    const names = image.band_names ?? [];
    const selects = CHANNELS.map((channel, i) => {
      const select = el(
        'select',
        { className: 'field-input', attrs: { name: `band-${channel.toLowerCase()}`, 'aria-label': `${channel} band` } },
        Array.from({ length: image.bands }, (_, b) => {
          const option = el('option', {
            text: names[b] && names[b] !== `b${b + 1}` ? `${b + 1} · ${names[b]}` : String(b + 1),
            attrs: { value: String(b + 1) },
          });
          option.selected = b + 1 === current[i];
          return option;
        }),
      );
      return { channel, select };
    });
    const onBandChange = (): void => {
      const bands = selects.map(({ select }) => Number(select.value));
      const natural = bands.every((band, i) => band === i + 1);
      this.emit({ bands: natural ? undefined : bands });
    };
    for (const { select } of selects) select.addEventListener('change', onBandChange);
    const row = el(
      'div',
      { className: 'band-row', attrs: { id: 'band-selector' } },
      selects.map(({ channel, select }) =>
        el('label', { className: `band-field band-${channel.toLowerCase()}` }, [
          el('span', { className: 'band-label', text: channel }),
          select,
        ]),
      ),
    );
    return this.section('Bands', `Band shown in each of red, green and blue (${image.bands} bands).`, row);
  }

  private mapSection(state: MapModeState): HTMLElement {
    const group = el('div', {
      className: 'segmented segmented-2',
      attrs: { role: 'group', id: 'map-mode', 'aria-label': 'Map mode' },
    });
    for (const { mode, label } of MAP_MODES) {
      const button = el('button', {
        className: 'segmented-btn',
        text: label,
        attrs: { type: 'button', 'data-mode': mode, 'aria-pressed': String(mode === state.mode) },
      });
      button.addEventListener('click', () => {
        if (button.getAttribute('aria-pressed') === 'true') return;
        for (const b of group.querySelectorAll('button')) b.setAttribute('aria-pressed', String(b === button));
        this.onMapMode(mode);
      });
      group.append(button);
    }
    const hint =
      state.mode === 'webmercator'
        ? `Reprojected to EPSG:3857${state.basemap ? ' over the basemap' : ' (no basemap set)'}; annotations are shown read-only.`
        : 'The image in its own pixels, where annotations are edited.';
    const body = el('div', { className: 'control-form' }, [group]);
    if (state.mode === 'webmercator') body.append(this.basemapForm(state));
    return this.section('Map', hint, body);
  }

  /** The basemap URL kept in this browser (localStorage), over the server's if it has one. */
  private basemapForm(state: MapModeState): HTMLElement {
    const input = el('input', {
      className: 'field-input',
      attrs: {
        type: 'text',
        name: 'basemap',
        'aria-label': 'Basemap XYZ URL',
        placeholder: 'https://…/{z}/{x}/{y}.png',
        spellcheck: 'false',
        value: state.basemap?.url ?? '',
      },
    });
    const error = el('p', { className: 'field-error', attrs: { 'aria-live': 'polite' } });
    const save = el('button', { className: 'btn btn-primary', text: 'Use', attrs: { type: 'submit' } });
    const reset = el('button', {
      className: 'btn',
      text: 'Server’s',
      title: 'Forget the URL saved in this browser (tessera serve --basemap sets the default)',
      attrs: { type: 'button' },
    });
    reset.disabled = state.basemap?.from !== 'browser';
    const form = el('form', { className: 'control-form', attrs: { id: 'basemap-form' } }, [
      el('label', { className: 'control-hint', text: `Basemap${state.basemap?.from === 'server' ? ' (from the server)' : ''}` }),
      input,
      el('div', { className: 'field-row' }, [save, reset]),
      error,
    ]);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const problem = basemapUrlProblem(input.value);
      error.textContent = problem ?? '';
      if (problem === null) this.onBasemap(input.value.trim());
    });
    reset.addEventListener('click', () => this.onBasemap(null));
    return form;
  }

  private section(title: string, hint: string, body: HTMLElement): HTMLElement {
    return el('section', { className: 'control' }, [
      el('h3', { className: 'control-title', text: title }),
      el('p', { className: 'control-hint', text: hint }),
      body,
    ]);
  }
}
