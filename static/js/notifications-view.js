// The bell: unread count and the history panel.

import * as api from './api.js';
import { $, h } from './dom.js';
import { formatTime } from './format.js';

const TYPES = ['success', 'error', 'info', 'warning'];

export function initNotificationsView({ store }) {
  return new NotificationsPanel(store);
}

class NotificationsPanel {
  #store;
  #bell = $('#bell');
  #panel = $('#notif-panel');
  #list = $('#notif-list');
  #count = $('#unread-count');
  #more = $('#notif-more');
  #error = $('#notif-error');
  #unreadOnly = $('#notif-unread-only');
  // A history page is on its way: no second request, no "Nothing here yet".
  #loading = false;

  constructor(store) {
    this.#store = store;
    this.#panel.tabIndex = -1;
    this.#listen();
    store.addEventListener('change', (ev) => {
      if (ev.detail === 'notifications' || ev.detail === 'all') this.#render();
    });
  }

  /** Closes and empties the panel, for the next session. */
  reset() {
    this.#close();
    this.#list.replaceChildren();
    this.#showError(null);
    this.#renderCount();
  }

  #listen() {
    this.#bell.addEventListener('click', () => (this.#isOpen() ? this.#close() : this.#open()));
    // On the document, not the panel: after "Mark read" re-renders the list,
    // focus may have fallen back to the body.
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && this.#isOpen()) this.#close({ focusBell: true });
    });
    document.addEventListener('click', (e) => {
      if (this.#isOpen() && !this.#panel.contains(e.target) && !this.#bell.contains(e.target)) this.#close();
    });
    this.#more.addEventListener('click', () => this.#loadMore());
    this.#unreadOnly.addEventListener('change', () => this.#render());
    $('#notif-mark-all').addEventListener('click', async () => {
      // One at a time: a user rarely has many, and it keeps the server's rate limit happy.
      for (const id of [...this.#store.unread]) await this.#markRead(id);
    });
  }

  #isOpen() {
    return !this.#panel.hidden;
  }

  #open() {
    this.#panel.hidden = false;
    this.#bell.setAttribute('aria-expanded', 'true');
    if (this.#store.historyCursor === undefined) this.#loadMore();
    this.#render();
    this.#panel.focus?.();
  }

  #close({ focusBell = false } = {}) {
    if (!this.#isOpen()) return;
    this.#panel.hidden = true;
    this.#bell.setAttribute('aria-expanded', 'false');
    if (focusBell) this.#bell.focus();
  }

  #showError(err) {
    this.#error.textContent = err ? err.message : '';
    this.#error.hidden = !err;
  }

  /** The next page of the history, read and unread. */
  async #loadMore() {
    const store = this.#store;
    if (this.#loading || store.historyCursor === null) return;
    this.#loading = true;
    this.#more.disabled = true;
    try {
      const page = await api.notifications.page({ cursor: store.historyCursor ?? undefined });
      store.addHistory(page.items, page.nextCursor);
      this.#showError(null);
    } catch (err) {
      this.#showError(err);
    } finally {
      this.#loading = false;
      this.#more.disabled = false;
      this.#render();
    }
  }

  async #markRead(id, button) {
    if (button) button.disabled = true;
    try {
      await api.notifications.markRead(id);
      const hadFocus = button && document.activeElement === button;
      this.#store.markRead(id);
      this.#showError(null);
      // The button is gone with the re-render: keep keyboard users in the panel.
      if (hadFocus && this.#isOpen()) this.#panel.focus();
    } catch (err) {
      if (err.status === 404) this.#store.markRead(id);
      else this.#showError(err);
      if (button?.isConnected) button.disabled = false;
    }
  }

  #renderCount() {
    const n = this.#store.unread.size;
    this.#count.textContent = String(n);
    this.#count.classList.toggle('is-zero', n === 0);
    this.#bell.title = n ? `${n} unread notification${n === 1 ? '' : 's'}` : 'No unread notifications';
  }

  /** The count always; the list only while the panel is open. */
  #render() {
    this.#renderCount();
    if (!this.#isOpen()) return;
    const store = this.#store;
    const items = store.sortedNotifications().filter((n) => !this.#unreadOnly.checked || store.unread.has(n.id));
    this.#list.replaceChildren(
      ...items.map((n) => notificationItem(n, store.unread.has(n.id), (id, button) => this.#markRead(id, button))),
    );
    $('#notif-empty').hidden = items.length > 0 || this.#loading;
    this.#more.hidden = !store.historyCursor;
    $('#notif-mark-all').disabled = store.unread.size === 0;
  }
}

/** One line of the history; an unread one has a "Mark read" button that calls `markRead(id, button)`. */
function notificationItem(n, unread, markRead) {
  const type = TYPES.includes(n.type) ? n.type : 'info';
  const button = unread
    ? h('button', {
      type: 'button',
      class: 'link-button',
      'data-testid': 'notification-mark-read',
      'aria-label': `Mark “${n.title ?? ''}” as read`,
    }, 'Mark read')
    : null;
  button?.addEventListener('click', () => markRead(n.id, button));
  return h(
    'li',
    {
      class: `note note--${type}${unread ? ' is-unread' : ''}`,
      'data-testid': 'notification-item',
      'data-id': n.id,
      'data-unread': String(unread),
    },
    h('span', { class: 'note__dot', 'aria-hidden': 'true' }),
    h('div', { class: 'note__body' },
      h('p', { class: 'note__title' },
        n.title ?? '', unread ? h('span', { class: 'visually-hidden' }, ' (unread)') : null),
      n.message ? h('p', { class: 'note__message' }, n.message) : null,
      h('time', { class: 'note__time muted', datetime: n.timestamp ?? '' }, formatTime(n.timestamp ?? n.createdAt))),
    button,
  );
}
