/** The Assist section of the Annotate panel: the magic-wand tool, Accept and Clear, and the
 * proposal's score and method (or the server's message when nothing was found). */
import type { AssistState, AssistTool } from '../map/assistTool';
import { el } from './dom';

export class AssistControls {
  private readonly button: HTMLButtonElement;
  private readonly accept: HTMLButtonElement;
  private readonly clear: HTMLButtonElement;
  private readonly status: HTMLElement;

  constructor(root: HTMLElement, tool: AssistTool) {
    this.button = el('button', {
      className: 'segmented-btn',
      text: 'Assist',
      title:
        'Assist (W): click inside an object for a proposed outline, Shift-click outside it to exclude, drag a box around it; Enter accepts, Esc clears',
      attrs: { type: 'button', id: 'tool-assist', 'aria-pressed': 'false' },
    });
    this.button.addEventListener('click', () => tool.setActive(!tool.active));
    this.accept = el('button', {
      className: 'btn btn-primary',
      text: 'Accept',
      title: 'Save the proposal with the current label (Enter)',
      attrs: { type: 'button', id: 'assist-accept', disabled: '' },
    });
    this.accept.addEventListener('click', () => tool.accept());
    this.clear = el('button', {
      className: 'btn',
      text: 'Clear',
      title: 'Drop the points and the box (Esc)',
      attrs: { type: 'button', id: 'assist-clear', disabled: '' },
    });
    this.clear.addEventListener('click', () => tool.clear());
    this.status = el('p', { className: 'control-hint assist-status', attrs: { id: 'assist-status', 'aria-live': 'polite' } });
    root.append(
      el('section', { className: 'control' }, [
        el('h3', { className: 'control-title', text: 'Assist' }),
        el('div', { className: 'segmented', attrs: { role: 'group', 'aria-label': 'Assist tool' } }, [this.button]),
        el('div', { className: 'field-row' }, [this.accept, this.clear]),
        this.status,
      ]),
    );
    this.setState('off', '', false);
  }

  setState(state: AssistState, message: string, hasPrompt: boolean): void {
    this.button.setAttribute('aria-pressed', String(state !== 'off'));
    this.accept.disabled = state !== 'proposed';
    this.clear.disabled = !hasPrompt;
    this.status.textContent = message;
    this.status.dataset.state = state;
    this.status.hidden = state === 'off';
  }
}
