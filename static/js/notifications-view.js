// The bell: unread count and the history panel.

import * as api from './api.js';
import { $, h } from './dom.js';
import { formatTime } from './format.js';

export function initNotificationsView({ store }) {
  const bell = $('#bell');
  const panel = $('#notif-panel');
  const list = $('#notif-list');
  const count = $('#unread-count');
  const more = $('#notif-more');
  const error = $('#notif-error');
  const unreadOnly = $('#notif-unread-only');
  let loading = false;

  const isOpen = () => !panel.hidden;

  function showError(err) {
    error.textContent = err ? err.message : '';
    error.hidden = !err;
  }

  async function loadMore() {
    if (loading || store.historyCursor === null) return;
    loading = true;
    more.disabled = true;
    try {
      const page = await api.notifications.page({ cursor: store.historyCursor ?? undefined });
      store.addHistory(page.items, page.nextCursor);
      showError(null);
    } catch (err) {
      showError(err);
    } finally {
      loading = false;
      more.disabled = false;
      render();
    }
  }

  async function markRead(id, button) {
    if (button) button.disabled = true;
    try {
      await api.notifications.markRead(id);
      const hadFocus = button && document.activeElement === button;
      store.markRead(id);
      showError(null);
      // The button is gone with the re-render: keep keyboard users in the panel.
      if (hadFocus && isOpen()) panel.focus();
    } catch (err) {
      if (err.status === 404) store.markRead(id);
      else showError(err);
      if (button?.isConnected) button.disabled = false;
    }
  }

  function open() {
    panel.hidden = false;
    bell.setAttribute('aria-expanded', 'true');
    if (store.historyCursor === undefined) loadMore();
    render();
    panel.focus?.();
  }

  function close({ focusBell = false } = {}) {
    if (!isOpen()) return;
    panel.hidden = true;
    bell.setAttribute('aria-expanded', 'false');
    if (focusBell) bell.focus();
  }

  panel.tabIndex = -1;
  bell.addEventListener('click', () => (isOpen() ? close() : open()));
  // On the document, not the panel: after "Mark read" re-renders the list,
  // focus may have fallen back to the body.
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && isOpen()) close({ focusBell: true });
  });
  document.addEventListener('click', (e) => {
    if (isOpen() && !panel.contains(e.target) && !bell.contains(e.target)) close();
  });
  more.addEventListener('click', loadMore);
  unreadOnly.addEventListener('change', render);
  $('#notif-mark-all').addEventListener('click', async () => {
    // One at a time: a user rarely has many, and it keeps the server's rate limit happy.
    for (const id of [...store.unread]) await markRead(id);
  });

  function renderCount() {
    const n = store.unread.size;
    count.textContent = String(n);
    count.classList.toggle('is-zero', n === 0);
    bell.title = n ? `${n} unread notification${n === 1 ? '' : 's'}` : 'No unread notifications';
  }

  function render() {
    renderCount();
    if (!isOpen()) return;
    const items = store.sortedNotifications().filter((n) => !unreadOnly.checked || store.unread.has(n.id));
    list.replaceChildren(
      ...items.map((n) => {
        const unread = store.unread.has(n.id);
        const type = ['success', 'error', 'info', 'warning'].includes(n.type) ? n.type : 'info';
        const button = unread
          ? h('button', { type: 'button', class: 'link-button', 'data-testid': 'notification-mark-read', 'aria-label': `Mark “${n.title ?? ''}” as read` }, 'Mark read')
          : null;
        button?.addEventListener('click', () => markRead(n.id, button));
        return h(
          'li',
          { class: `note note--${type}${unread ? ' is-unread' : ''}`, 'data-testid': 'notification-item', 'data-id': n.id, 'data-unread': String(unread) },
          h('span', { class: 'note__dot', 'aria-hidden': 'true' }),
          h('div', { class: 'note__body' },
            h('p', { class: 'note__title' }, n.title ?? '', unread ? h('span', { class: 'visually-hidden' }, ' (unread)') : null),
            n.message ? h('p', { class: 'note__message' }, n.message) : null,
            h('time', { class: 'note__time muted', datetime: n.timestamp ?? '' }, formatTime(n.timestamp ?? n.createdAt))),
          button,
        );
      }),
    );
    $('#notif-empty').hidden = items.length > 0 || loading;
    more.hidden = !store.historyCursor;
    $('#notif-mark-all').disabled = store.unread.size === 0;
  }

  store.addEventListener('change', (ev) => {
    if (ev.detail === 'notifications' || ev.detail === 'all') render();
  });

  return {
    reset() {
      close();
      list.replaceChildren();
      showError(null);
      renderCount();
    },
  };
}
