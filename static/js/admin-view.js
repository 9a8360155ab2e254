// The operator view (role admin): open streams per user, force-disconnect,
// and sending notifications. The server enforces the role; hiding the view
// from others is only about not showing buttons that would answer 403.

import * as api from './api.js';
import { $, busy, clearErrors, h, showErrors } from './dom.js';

const REFRESH_MS = 5000;

export function initAdminView({ store, toast }) {
  return new AdminView(store, toast);
}

class AdminView {
  #store;
  #toast;
  #body = $('#admin-conn-body');
  #error = $('#admin-conn-error');
  #form = $('#admin-notify-form');
  #timer = 0;
  #active = false;

  constructor(store, toast) {
    this.#store = store;
    this.#toast = toast;
    $('#admin-refresh').addEventListener('click', () => this.#refresh());
    for (const radio of this.#form.querySelectorAll('input[name="target"]')) {
      radio.addEventListener('change', () => this.#syncTarget());
    }
    this.#syncTarget();
    this.#form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.#send();
    });
    document.addEventListener('visibilitychange', () => {
      if (this.#active && document.visibilityState === 'visible') this.#refresh();
    });
  }

  /** Shown or hidden; the connections are polled only while someone looks at them. */
  setActive(on) {
    this.#active = on && this.#store.user?.role === 'admin';
    if (this.#active) this.#tick();
    else clearTimeout(this.#timer);
  }

  #tick() {
    clearTimeout(this.#timer);
    if (!this.#active) return;
    if (document.visibilityState === 'visible') this.#refresh();
    this.#timer = setTimeout(() => this.#tick(), REFRESH_MS);
  }

  // ---- open streams -------------------------------------------------------------

  async #refresh() {
    try {
      const data = await api.admin.connections();
      this.#render(data);
      this.#error.hidden = true;
    } catch (err) {
      this.#error.textContent = err.message;
      this.#error.hidden = false;
    }
  }

  /** Users with the most streams first. */
  #render({ total = 0, users = [] } = {}) {
    $('#admin-total').textContent = `(${total})`;
    $('#admin-conn-empty').hidden = users.length > 0;
    const me = this.#store.user?.id;
    this.#body.replaceChildren(
      ...[...users]
        .sort((a, b) => b.connections - a.connections)
        .map((u) => connectionRow(u, u.userId === me, (button) => this.#disconnect(u.userId, button))),
    );
  }

  async #disconnect(userId, button) {
    button.disabled = true;
    try {
      const { closed } = await api.admin.disconnect(userId);
      const message = `Closed ${closed} stream${closed === 1 ? '' : 's'}. Clients reconnect by themselves.`;
      this.#toast({ title: 'Disconnected', message, type: 'info', duration: 5000 });
    } catch (err) {
      this.#toast({ title: 'Could not disconnect', message: err.message, type: 'error', duration: 8000 });
    } finally {
      button.disabled = false;
      this.#refresh();
    }
  }

  // ---- sending a notification -----------------------------------------------------

  /** The user id field counts only when sending to one user. */
  #syncTarget() {
    const toUser = this.#form.elements.target.value === 'user';
    $('#admin-user-id').disabled = !toUser;
    $('#admin-user-id').closest('.field').classList.toggle('is-disabled', !toUser);
  }

  async #send() {
    const form = this.#form;
    const f = form.elements;
    const payload = notificationFromForm(f);
    const missing = {};
    if (f.target.value === 'user' && !payload.userIds[0]) missing.userIds = 'Enter a user id';
    if (!payload.title) missing.title = 'Required';
    if (!payload.message) missing.message = 'Required';
    if (Object.keys(missing).length) {
      showErrors(form, { message: 'Please fill in the highlighted fields.', fields: missing });
      return;
    }
    await busy(form, async () => {
      try {
        await api.admin.notify(payload);
        clearErrors(form);
        f.title.value = '';
        f.message.value = '';
        const to = payload.broadcast ? 'To everyone.' : `To ${payload.userIds[0]}.`;
        this.#toast({ title: 'Notification sent', message: to, type: 'success', duration: 4000 });
      } catch (err) {
        showErrors(form, err);
      }
    });
  }
}

function connectionRow(u, isMe, disconnect) {
  const button = h('button', {
    type: 'button',
    class: 'button button--small button--danger',
    'data-testid': 'admin-disconnect',
    'aria-label': `Disconnect all streams of user ${u.userId}`,
  }, 'Disconnect');
  button.addEventListener('click', () => disconnect(button));
  return h('tr', { 'data-testid': 'admin-conn-row', 'data-user-id': u.userId },
    h('td', { 'data-label': 'User' }, h('code', {}, u.userId), isMe ? h('span', { class: 'muted' }, ' (you)') : null),
    h('td', { class: 'num', 'data-label': 'Streams' }, String(u.connections)),
    h('td', { class: 'actions' }, button));
}

/** The POST /api/admin/notifications body: to everyone, or to the one user id given. */
function notificationFromForm(f) {
  const payload = {
    type: f.type.value,
    title: f.title.value.trim(),
    message: f.message.value.trim(),
    dismissible: f.dismissible.checked,
  };
  if (f.duration.value !== '') payload.duration = Number(f.duration.value);
  if (f.target.value === 'all') payload.broadcast = true;
  else payload.userIds = [f.userId.value.trim()];
  return payload;
}
