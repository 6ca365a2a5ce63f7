/**
 * The Assist ("magic wand") tool over `POST /images/{id}/segment`: a click adds a positive
 * point, a Shift-click a negative one (as Shift-drag erases with the brush), a drag sets the box.
 * After each change of the prompt a proposal is asked for (debounced; the previous request is
 * aborted, see ./assist) and drawn dashed over the map, its score and method reported to the
 * host; Enter (accept) saves it as a new annotation with the current label through the editor's
 * save path (host.accept: pending saves, undo and live updates as for drawn polygons); Esc
 * clears the prompt. A 400 or 422 answer is reported with the server's message and the prompt
 * kept.
 *
 * Pointer events are taken on the map element in the capture phase while the tool is on (as the
 * brush does), so OpenLayers neither pans nor selects under it; the wheel still zooms.
 */
import type OLMap from 'ol/Map';
import Feature from 'ol/Feature';
import PointGeometry from 'ol/geom/Point';
import Polygon from 'ol/geom/Polygon';
import VectorLayer from 'ol/layer/Vector';
import VectorSource from 'ol/source/Vector';
import { Circle as CircleStyle, Fill, Stroke, Style } from 'ol/style';

import type { AnnotationFeature, ImageDetail } from '../api';
import { segmentImage } from '../api';
import type { AssistPrompt, AssistView } from './assist';
import { boxBetween, describeError, describeProposal, emptyPrompt, isAskable, LatestRequest, segmentBody } from './assist';
import { mapGeometry } from './annotations';

/** Wait this long after the last prompt change before asking (ms). */
const DEBOUNCE_MS = 200;
/** A press that moves less than this (screen px) is a click, not a box. */
const DRAG_PX = 5;

export type AssistState = 'off' | 'idle' | 'loading' | 'proposed' | 'error';

export interface AssistHost {
  label(): string;
  /** The image id to ask about (a volume's id, not its plane's). */
  imageId(): string | null;
  view(): AssistView;
  /** Save the proposal as a new annotation (the editor's save path). */
  accept(feature: AnnotationFeature): void;
  /** The tool was turned on or off, or its state or message changed. */
  changed(state: AssistState, message: string): void;
}

const POSITIVE = new Style({
  image: new CircleStyle({ radius: 5, fill: new Fill({ color: '#3cb44b' }), stroke: new Stroke({ color: '#ffffff', width: 1.5 }) }),
});
const NEGATIVE = new Style({
  image: new CircleStyle({ radius: 5, fill: new Fill({ color: '#e6194b' }), stroke: new Stroke({ color: '#ffffff', width: 1.5 }) }),
});
const BOX = new Style({ stroke: new Stroke({ color: '#ffffff', width: 1.5, lineDash: [4, 4] }) });
const PREVIEW = [
  new Style({ stroke: new Stroke({ color: 'rgba(0, 0, 0, 0.6)', width: 3.5 }) }),
  new Style({
    stroke: new Stroke({ color: '#ffe119', width: 2, lineDash: [8, 6] }),
    fill: new Fill({ color: 'rgba(255, 225, 25, 0.15)' }),
  }),
];

export class AssistTool {
  private on = false;
  private image: ImageDetail | null = null;
  private prompt: AssistPrompt = emptyPrompt();
  private proposal: AnnotationFeature | null = null;
  private state: AssistState = 'off';
  private message = '';
  private press: { x: number; y: number; at: { x: number; y: number }; negative: boolean } | null = null;
  private dragBox: [number, number, number, number] | null = null;
  private readonly requests = new LatestRequest<AnnotationFeature>(DEBOUNCE_MS);
  private readonly promptSource = new VectorSource();
  private readonly previewSource = new VectorSource();

  constructor(
    private readonly map: OLMap,
    private readonly element: HTMLElement,
    private readonly host: AssistHost,
  ) {
    map.addLayer(new VectorLayer({ source: this.previewSource, style: PREVIEW, zIndex: 20, properties: { role: 'assist-preview' } }));
    map.addLayer(
      new VectorLayer({
        source: this.promptSource,
        style: (f) => (f.get('role') === 'box' ? BOX : f.get('positive') ? POSITIVE : NEGATIVE),
        zIndex: 21,
        properties: { role: 'assist-prompt' },
      }),
    );
    element.addEventListener('pointerdown', (e) => this.down(e), { capture: true });
    element.addEventListener('pointermove', (e) => this.move(e), { capture: true });
    window.addEventListener('pointerup', (e) => this.up(e), { capture: true });
  }

  get active(): boolean {
    return this.on;
  }

  get hasPrompt(): boolean {
    return this.prompt.points.length > 0 || this.prompt.box !== null;
  }

  get currentProposal(): AnnotationFeature | null {
    return this.proposal;
  }

  /** The image (in the plane shown) changed, or the slice: the prompt belongs to the old one. */
  setContext(image: ImageDetail | null): void {
    this.image = image;
    this.clear();
    if (!image) this.setActive(false);
  }

  setActive(on: boolean): void {
    const next = on && this.image !== null;
    if (next === this.on) return;
    this.on = next;
    this.press = null;
    this.element.classList.toggle('is-assisting', next);
    this.element.style.cursor = next ? 'crosshair' : '';
    if (!next) this.clear();
    this.setState(next ? 'idle' : 'off', next ? 'Click inside an object (Shift-click: outside), or drag a box' : '');
  }

  /** Esc: drop the prompt and the proposal (the tool stays on). */
  clear(): void {
    this.requests.cancel();
    this.prompt = emptyPrompt();
    this.proposal = null;
    this.dragBox = null;
    this.promptSource.clear();
    this.previewSource.clear();
    if (this.on) this.setState('idle', 'Click inside an object (Shift-click: outside), or drag a box');
  }

  /** Enter: save the proposal shown; the prompt is cleared for the next object. */
  accept(): boolean {
    const proposal = this.proposal;
    if (!proposal || this.state !== 'proposed') return false;
    const label = this.host.label();
    const { slice, plane } = proposal.properties;
    const feature: AnnotationFeature = {
      type: 'Feature',
      geometry: proposal.geometry,
      properties: { label, ...(slice !== undefined && plane !== undefined ? { slice, plane } : {}) },
    };
    this.host.accept(feature);
    this.clear();
    return true;
  }

  private setState(state: AssistState, message: string): void {
    this.state = state;
    this.message = message;
    this.element.dataset.assist = state;
    this.host.changed(state, message);
  }

  private pixelAt(event: PointerEvent): { x: number; y: number } {
    const [x = 0, y = 0] = this.map.getEventCoordinate(event);
    return { x, y: -y }; // map y is minus the pixel row
  }

  private inside(at: { x: number; y: number }): boolean {
    const image = this.image;
    return image !== null && at.x >= 0 && at.y >= 0 && at.x < image.width && at.y < image.height;
  }

  private down(event: PointerEvent): void {
    if (!this.on || event.button !== 0) return;
    event.preventDefault();
    event.stopPropagation();
    this.press = { x: event.clientX, y: event.clientY, at: this.pixelAt(event), negative: event.shiftKey };
  }

  private move(event: PointerEvent): void {
    const press = this.press;
    if (!this.on || !press) return;
    event.stopPropagation();
    if (Math.hypot(event.clientX - press.x, event.clientY - press.y) < DRAG_PX) return;
    this.dragBox = boxBetween(press.at, this.clamp(this.pixelAt(event)));
    this.drawPrompt();
  }

  private up(event: PointerEvent): void {
    const press = this.press;
    if (!this.on || !press || event.button !== 0) return;
    this.press = null;
    event.stopPropagation();
    const dragged = Math.hypot(event.clientX - press.x, event.clientY - press.y) >= DRAG_PX;
    if (dragged) {
      const box = boxBetween(this.clamp(press.at), this.clamp(this.pixelAt(event)));
      this.dragBox = null;
      if (!box) return;
      this.prompt = { ...this.prompt, box };
    } else {
      if (!this.inside(press.at)) {
        this.setState('error', 'Click inside the image');
        return;
      }
      this.prompt = { ...this.prompt, points: [...this.prompt.points, { ...press.at, positive: !press.negative }] };
    }
    this.changedPrompt();
  }

  private clamp(at: { x: number; y: number }): { x: number; y: number } {
    const w = this.image?.width ?? 0;
    const h = this.image?.height ?? 0;
    return { x: Math.min(w, Math.max(0, at.x)), y: Math.min(h, Math.max(0, at.y)) };
  }

  private drawPrompt(): void {
    this.promptSource.clear();
    const box = this.dragBox ?? this.prompt.box;
    if (box) {
      const [x0, y0, x1, y1] = box;
      const f = new Feature(new Polygon([[[x0, -y0], [x1, -y0], [x1, -y1], [x0, -y1], [x0, -y0]]]));
      f.set('role', 'box');
      this.promptSource.addFeature(f);
    }
    for (const p of this.prompt.points) {
      const f = new Feature(new PointGeometry([p.x, -p.y]));
      f.set('positive', p.positive);
      this.promptSource.addFeature(f);
    }
  }

  /** Ask for a proposal of the new prompt (the one shown stays until the answer). */
  private changedPrompt(): void {
    this.drawPrompt();
    const id = this.host.imageId();
    if (!id) return;
    if (!isAskable(this.prompt)) {
      this.requests.cancel();
      this.proposal = null;
      this.previewSource.clear();
      this.setState('idle', 'Add a positive point (click) or a box (drag)');
      return;
    }
    const body = segmentBody(this.prompt, this.host.view(), this.host.label());
    this.setState('loading', 'Asking for a proposal…');
    this.requests.schedule(
      (signal) => segmentImage(id, body, signal),
      (feature) => this.show(feature),
      (error) => {
        this.proposal = null;
        this.previewSource.clear();
        this.setState('error', describeError(error));
      },
    );
  }

  private show(feature: AnnotationFeature): void {
    this.proposal = feature;
    this.previewSource.clear();
    const geometry = mapGeometry(feature);
    if (geometry) this.previewSource.addFeature(new Feature(geometry));
    const score = feature.properties.score;
    this.element.dataset.assistScore = typeof score === 'number' ? String(score) : '';
    this.setState('proposed', describeProposal(feature));
  }

  /** The status line, for the panel (and tests). */
  get status(): { state: AssistState; message: string } {
    return { state: this.state, message: this.message };
  }
}
