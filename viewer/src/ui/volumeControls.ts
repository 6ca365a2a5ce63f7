/**
 * Controls for a volume (DICOM series): the plane (axial / coronal / sagittal), the slice (a
 * slider; the map also steps it with PageUp/PageDown, ArrowUp/ArrowDown and Shift/Ctrl + wheel)
 * and the window: a preset picker, and the width/level readout that a right-drag changes.
 */
import type { ImageDetail, PlaneName, TileOptions } from '../api';
import { PLANE_NAMES } from '../api';
import { el } from './dom';

export interface VolumeState {
  plane: PlaneName;
  slice: number;
  /** A named preset, or null for an explicit window (right-drag). */
  preset: string | null;
  window: number;
  level: number;
}

export function volumeTileOptions(state: VolumeState): TileOptions {
  return state.preset !== null
    ? { plane: state.plane, slice: state.slice, preset: state.preset }
    : { plane: state.plane, slice: state.slice, window: state.window, level: state.level };
}

/** The starting state for a volume: the acquisition plane, its middle slice, the default window. */
export function initialVolumeState(image: ImageDetail): VolumeState {
  const plane = image.acquisition_plane ?? 'axial';
  const info = image.planes?.[plane];
  const slices = info?.slices ?? image.slices ?? 1;
  const preset = image.default_window ?? image.window_presets?.[0] ?? null;
  return {
    plane,
    slice: info?.default_slice ?? Math.floor(slices / 2),
    preset: preset?.name ?? null,
    window: preset?.width ?? 400,
    level: preset?.center ?? 40,
  };
}

export function planeSlices(image: ImageDetail, plane: PlaneName): number {
  return image.planes?.[plane]?.slices ?? image.slices ?? 1;
}

function label(name: string): string {
  return name.replace(/_/g, ' ').replace(/^\w/, (c) => c.toUpperCase());
}

export class VolumeControls {
  private image: ImageDetail | null = null;
  private state: VolumeState | null = null;
  private slider: HTMLInputElement | null = null;
  private sliceText: HTMLElement | null = null;
  private presetSelect: HTMLSelectElement | null = null;
  private windowText: HTMLElement | null = null;
  private planeButtons = new Map<PlaneName, HTMLButtonElement>();

  constructor(
    private readonly root: HTMLElement,
    private readonly onChange: (state: VolumeState, planeChanged: boolean) => void,
  ) {
    this.root.hidden = true;
  }

  get current(): VolumeState | null {
    return this.state ? { ...this.state } : null;
  }

  setImage(image: ImageDetail | null, state: VolumeState | null = null): void {
    this.image = image;
    this.state = state ? { ...state } : null;
    this.planeButtons.clear();
    if (!image || !state) {
      this.root.replaceChildren();
      this.root.hidden = true;
      return;
    }
    this.root.replaceChildren(this.planeSection(image), this.sliceSection(), this.windowSection(image));
    this.root.hidden = false;
    this.refresh();
  }

  /** Step the slice by `delta` (clamped); true if it changed. */
  stepSlice(delta: number): boolean {
    if (!this.state) return false;
    return this.setSlice(this.state.slice + delta);
  }

  setSlice(slice: number): boolean {
    if (!this.state || !this.image) return false;
    const last = planeSlices(this.image, this.state.plane) - 1;
    const next = Math.max(0, Math.min(last, Math.round(slice)));
    if (next === this.state.slice) return false;
    this.state.slice = next;
    this.refresh();
    this.onChange({ ...this.state }, false);
    return true;
  }

  setPlane(plane: PlaneName): void {
    if (!this.state || !this.image || plane === this.state.plane) return;
    const info = this.image.planes?.[plane];
    if (!info) return;
    this.state.plane = plane;
    this.state.slice = info.default_slice ?? Math.floor(info.slices / 2);
    this.refresh();
    this.onChange({ ...this.state }, true);
  }

  setPreset(name: string): void {
    if (!this.state || !this.image) return;
    const preset = this.image.window_presets?.find((p) => p.name === name);
    if (!preset) return;
    this.state.preset = name;
    this.state.window = preset.width;
    this.state.level = preset.center;
    this.refresh();
    this.onChange({ ...this.state }, false);
  }

  /** An explicit window (from a right-drag); `commit` false only updates the readout. */
  setWindow(window: number, level: number, commit: boolean): void {
    if (!this.state) return;
    this.state.preset = null;
    this.state.window = Math.max(1, window);
    this.state.level = level;
    this.refresh();
    if (commit) this.onChange({ ...this.state }, false);
  }

  private refresh(): void {
    const { image, state } = this;
    if (!image || !state) return;
    const count = planeSlices(image, state.plane);
    if (this.slider) {
      this.slider.max = String(count - 1);
      this.slider.value = String(state.slice);
    }
    if (this.sliceText) {
      this.sliceText.textContent = `${state.slice + 1} / ${count}`;
      this.sliceText.dataset.slice = String(state.slice);
    }
    for (const [plane, button] of this.planeButtons) {
      button.setAttribute('aria-pressed', String(plane === state.plane));
    }
    if (this.presetSelect) this.presetSelect.value = state.preset ?? '';
    if (this.windowText) {
      this.windowText.textContent = `W ${Math.round(state.window)} · L ${Math.round(state.level)}`;
      this.windowText.dataset.window = String(state.window);
      this.windowText.dataset.level = String(state.level);
    }
  }

  private planeSection(image: ImageDetail): HTMLElement {
    const group = el('div', { className: 'segmented', attrs: { role: 'group', id: 'plane-buttons', 'aria-label': 'Plane' } });
    for (const plane of PLANE_NAMES) {
      if (!image.planes?.[plane]) continue;
      const button = el('button', {
        className: 'segmented-btn',
        text: label(plane),
        attrs: { type: 'button', 'data-plane': plane, 'aria-pressed': 'false' },
      });
      button.addEventListener('click', () => this.setPlane(plane));
      this.planeButtons.set(plane, button);
      group.append(button);
    }
    return this.section('Plane', 'Each plane has its own pixel grid.', group);
  }

  private sliceSection(): HTMLElement {
    const slider = el('input', {
      className: 'slice-slider',
      attrs: { type: 'range', id: 'slice-slider', min: '0', step: '1', 'aria-label': 'Slice' },
    });
    slider.addEventListener('input', () => this.setSlice(slider.valueAsNumber));
    this.slider = slider;
    this.sliceText = el('span', { className: 'slice-text', attrs: { id: 'slice-text' } });
    return this.section(
      'Slice',
      'PageUp/PageDown, ↑/↓ or Shift + wheel on the image.',
      el('div', { className: 'field-row' }, [slider, this.sliceText]),
    );
  }

  private windowSection(image: ImageDetail): HTMLElement {
    const select = el(
      'select',
      { className: 'field-input', attrs: { id: 'preset-select', 'aria-label': 'Window preset' } },
      [
        el('option', { text: 'Custom', attrs: { value: '', disabled: '' } }),
        ...(image.window_presets ?? []).map((p) =>
          el('option', {
            text: `${label(p.name)} (W ${p.width} · L ${p.center})`,
            attrs: { value: p.name },
          }),
        ),
      ],
    );
    select.addEventListener('change', () => this.setPreset(select.value));
    this.presetSelect = select;
    this.windowText = el('span', { className: 'window-text', attrs: { id: 'window-text' } });
    return this.section(
      'Window / level',
      'Pick a preset, or right-drag on the image (← → width, ↑ ↓ level).',
      el('div', { className: 'control-form' }, [select, this.windowText]),
    );
  }

  private section(title: string, hint: string, body: HTMLElement): HTMLElement {
    return el('section', { className: 'control' }, [
      el('h3', { className: 'control-title', text: title }),
      el('p', { className: 'control-hint', text: hint }),
      body,
    ]);
  }
}
