// The operator view (role admin): open streams per user, force-disconnect,
// and sending notifications. The server enforces the role; hiding the view
// from others is only about not showing buttons that would answer 403.

import * as api from './api.js';
import { $, busy, clearErrors, h, showErrors } from './dom.js';

const REFRESH_MS = 5000;

export function initAdminView({ store, toast }) {
  const body = $('#admin-conn-body');
  const error = $('#admin-conn-error');
  const form = $('#admin-notify-form');
  let timer = 0;
  let active = false;

  async function refresh() {
    try {
      const data = await api.admin.connections();
      render(data);
      error.hidden = true;
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  }

  function render({ total = 0, users = [] } = {}) {
    $('#admin-total').textContent = `(${total})`;
    $('#admin-conn-empty').hidden = users.length > 0;
    const me = store.user?.id;
    body.replaceChildren(
      ...[...users]
        .sort((a, b) => b.connections - a.connections)
        .map((u) => {
          const button = h('button', { type: 'button', class: 'button button--small button--danger', 'data-testid': 'admin-disconnect', 'aria-label': `Disconnect all streams of user ${u.userId}` }, 'Disconnect');
          button.addEventListener('click', () => disconnect(u.userId, button));
          return h('tr', { 'data-testid': 'admin-conn-row', 'data-user-id': u.userId },
            h('td', { 'data-label': 'User' }, h('code', {}, u.userId), u.userId === me ? h('span', { class: 'muted' }, ' (you)') : null),
            h('td', { class: 'num', 'data-label': 'Streams' }, String(u.connections)),
            h('td', { class: 'actions' }, button));
        }),
    );
  }

  async function disconnect(userId, button) {
    button.disabled = true;
    try {
      const { closed } = await api.admin.disconnect(userId);
      toast({ title: 'Disconnected', message: `Closed ${closed} stream${closed === 1 ? '' : 's'}. Clients reconnect by themselves.`, type: 'info', duration: 5000 });
    } catch (err) {
      toast({ title: 'Could not disconnect', message: err.message, type: 'error', duration: 8000 });
    } finally {
      button.disabled = false;
      refresh();
    }
  }

  $('#admin-refresh').addEventListener('click', refresh);

  const syncTarget = () => {
    const toUser = form.elements.target.value === 'user';
    $('#admin-user-id').disabled = !toUser;
    $('#admin-user-id').closest('.field').classList.toggle('is-disabled', !toUser);
  };
  for (const radio of form.querySelectorAll('input[name="target"]')) radio.addEventListener('change', syncTarget);
  syncTarget();

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = form.elements;
    const payload = {
      type: f.type.value,
      title: f.title.value.trim(),
      message: f.message.value.trim(),
      dismissible: f.dismissible.checked,
    };
    if (f.duration.value !== '') payload.duration = Number(f.duration.value);
    if (f.target.value === 'all') payload.broadcast = true;
    else payload.userIds = [f.userId.value.trim()];
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
        toast({ title: 'Notification sent', message: payload.broadcast ? 'To everyone.' : `To ${payload.userIds[0]}.`, type: 'success', duration: 4000 });
      } catch (err) {
        showErrors(form, err);
      }
    });
  });

  // Poll only while someone looks at the view.
  const tick = () => {
    clearTimeout(timer);
    if (!active) return;
    if (document.visibilityState === 'visible') refresh();
    timer = setTimeout(tick, REFRESH_MS);
  };
  document.addEventListener('visibilitychange', () => active && document.visibilityState === 'visible' && refresh());

  return {
    setActive(on) {
      active = on && store.user?.role === 'admin';
      if (active) tick();
      else clearTimeout(timer);
    },
  };
}
