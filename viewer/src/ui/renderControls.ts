/**
 * Rendering options for the image shown: a min/max stretch for images that are not 8-bit and a
 * band → RGB selector for images with three or more bands. Each change yields TileOptions.
 */
import type { ImageDetail, TileOptions } from '../api';
import { el } from './dom';

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
  ) {
    this.root.hidden = true;
  }

  /** Show the controls that apply to `image`, starting from `options`. */
  setImage(image: ImageDetail | null, options: TileOptions = {}): void {
    this.options = { ...options };
    const sections: HTMLElement[] = [];
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

  private section(title: string, hint: string, body: HTMLElement): HTMLElement {
    return el('section', { className: 'control' }, [
      el('h3', { className: 'control-title', text: title }),
      el('p', { className: 'control-hint', text: hint }),
      body,
    ]);
  }
}
