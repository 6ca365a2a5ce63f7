/**
 * The Tags box: the project's labels allowed as image-level tags (a label whose `kinds` include
 * `tag`), one checkbox each. Ticking one stores a tag annotation (geometry null, kind `tag`);
 * unticking deletes the image's tags with that label.
 */
import type { AnnotationFeature, Label } from '../api';
import { createAnnotation, deleteAnnotation } from '../api';
import { el } from './dom';

/** Labels that may be image-level tags. */
export function tagLabels(labels: Label[]): Label[] {
  return labels.filter((l) => Array.isArray(l.kinds) && l.kinds.includes('tag'));
}

export class TagsBox {
  private imageId: string | null = null;
  private labels: Label[] = [];
  private tags: AnnotationFeature[] = [];
  private readonly list: HTMLElement;

  constructor(
    private readonly root: HTMLElement,
    private readonly onError: (title: string, message: string) => void,
    private readonly onChanged: () => void,
  ) {
    this.list = el('div', { className: 'tag-list', attrs: { id: 'tag-list', role: 'group', 'aria-label': 'Image tags' } });
    root.replaceChildren(
      el('section', { className: 'control' }, [
        el('h3', { className: 'control-title', text: 'Image tags' }),
        this.list,
      ]),
    );
    root.hidden = true;
  }

  /** The image, the project's labels and the image's annotations (tags among them). */
  show(imageId: string, labels: Label[], annotations: AnnotationFeature[]): void {
    this.imageId = imageId;
    this.labels = tagLabels(labels);
    this.tags = annotations.filter((a) => a.properties.kind === 'tag');
    this.render();
  }

  hide(): void {
    this.imageId = null;
    this.root.hidden = true;
  }

  private render(): void {
    this.root.hidden = this.imageId === null || this.labels.length === 0;
    this.list.replaceChildren(
      ...this.labels.map((label) => {
        const box = el('input', { attrs: { type: 'checkbox', 'data-label': label.name } });
        box.checked = this.tags.some((t) => t.properties.label === label.name);
        box.addEventListener('change', () => void this.toggle(label.name, box));
        const swatch = el('span', { className: 'label-swatch', attrs: { 'aria-hidden': 'true' } });
        swatch.style.background = label.color ?? '#888';
        return el('label', { className: 'tag-option', title: label.name }, [box, swatch, label.name]);
      }),
    );
  }

  private async toggle(label: string, box: HTMLInputElement): Promise<void> {
    const imageId = this.imageId;
    if (!imageId) return;
    box.disabled = true;
    try {
      if (box.checked) {
        const stored = await createAnnotation(imageId, {
          type: 'Feature',
          geometry: null,
          properties: { label, kind: 'tag' },
        });
        this.tags.push(stored);
      } else {
        for (const tag of this.tags.filter((t) => t.properties.label === label)) {
          if (tag.id === undefined) continue;
          await deleteAnnotation(tag.id, Number(tag.properties.version ?? 1));
          this.tags = this.tags.filter((t) => t !== tag);
        }
      }
      this.onChanged();
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.onError(box.checked ? 'The tag was not added' : 'The tag was not removed', message);
    } finally {
      if (this.imageId === imageId) {
        box.disabled = false;
        box.checked = this.tags.some((t) => t.properties.label === label);
      }
    }
  }
}
