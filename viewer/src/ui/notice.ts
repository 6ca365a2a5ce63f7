/** A message over the map: not signed in, image missing, server errors. */
import { el } from './dom';

export type NoticeKind = 'info' | 'error' | 'signin';

export class Notice {
  constructor(private readonly root: HTMLElement) {
    this.hide();
  }

  show(kind: NoticeKind, title: string, body: (Node | string)[]): void {
    this.root.className = `notice notice-${kind}`;
    this.root.setAttribute('role', kind === 'info' ? 'status' : 'alert');
    this.root.replaceChildren(
      el('div', { className: 'notice-card' }, [
        el('h2', { className: 'notice-title', text: title }),
        el('p', { className: 'notice-body' }, body),
      ]),
    );
    this.root.hidden = false;
  }

  /** The session cookie is missing or no longer valid. */
  showSignIn(): void {
    const address = `${window.location.origin}/?token=…`;
    this.show('signin', 'Not signed in', [
      'Sign in with the address printed by ',
      el('code', { text: 'tessera serve' }),
      ' (',
      el('code', { text: address }),
      ').',
    ]);
  }

  hide(): void {
    this.root.hidden = true;
    this.root.replaceChildren();
  }
}
