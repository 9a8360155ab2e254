// Earnings: the add form, platforms, totals and the table with inline editing.
//
// Rows are keyed by earning id and patched in place rather than re-rendered,
// because events from other tabs arrive at any moment: a re-render would
// throw away the row someone is editing and the focus with it.

import * as api from './api.js';
import { $, busy, clearErrors, h, showErrors } from './dom.js';
import { formatDay, hours, money, moneyOf, today } from './format.js';

const safeColor = (c) => (/^#[0-9a-f]{3,8}$/i.test(String(c)) ? c : '#8884');

/** A number input's value as the API wants it: '' is "not given". */
const numberOrNull = (v) => (String(v).trim() === '' ? null : Number(v));

export function initEarningsView({ store, toast }) {
  const form = $('#earning-form');
  const select = $('#earning-platform');
  const tbody = $('#earnings-body');
  const rows = new Map(); // id -> {tr, sig, editing}
  let initialised = false;

  $('#earning-date').value = today();

  // ---- add an earning -------------------------------------------------
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const body = { platformId: data.get('platformId'), date: data.get('date'), amount: numberOrNull(data.get('amount')) };
    const hoursValue = numberOrNull(data.get('hours'));
    if (hoursValue != null) body.hours = hoursValue;
    const notes = String(data.get('notes') ?? '').trim();
    if (notes) body.notes = notes;
    const missing = {};
    if (!body.platformId) missing.platformId = store.platforms.size ? 'Choose a platform' : 'Add a platform first';
    if (!body.date) missing.date = 'Required';
    if (body.amount == null) missing.amount = 'Required';
    if (Object.keys(missing).length) {
      showErrors(form, { message: 'Please fill in the highlighted fields.', fields: missing });
      return;
    }
    await busy(form, async () => {
      try {
        const created = await api.earnings.create(body);
        store.upsertEarning(created);
        clearErrors(form);
        for (const name of ['amount', 'hours', 'notes']) form.elements[name].value = '';
        form.elements.amount.focus();
      } catch (err) {
        showErrors(form, err);
      }
    });
  });

  // ---- platforms --------------------------------------------------------
  const platformForm = $('#platform-form');
  platformForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = platformForm.elements.name.value.trim();
    const color = platformForm.elements.color.value;
    if (!name) {
      showErrors(platformForm, { message: 'Give the platform a name.', fields: { name: 'Required' } });
      return;
    }
    await busy(platformForm, async () => {
      try {
        const created = await api.platforms.create(name, color);
        store.upsertPlatform(created);
        clearErrors(platformForm);
        // Typed on while the request ran? Then keep what was typed.
        if (platformForm.elements.name.value.trim() === name) platformForm.elements.name.value = '';
        if (!select.value) select.value = created.id;
      } catch (err) {
        showErrors(platformForm, err);
      }
    });
  });

  function renderPlatforms() {
    const list = [...store.platforms.values()].sort((a, b) => a.name.localeCompare(b.name));
    const chosen = select.value;
    select.replaceChildren(
      ...(list.length ? [] : [h('option', { value: '', disabled: true, selected: true }, 'Add a platform first')]),
      ...list.map((p) => h('option', { value: p.id }, p.name)),
    );
    if (list.some((p) => p.id === chosen)) select.value = chosen;
    $('#platform-list').replaceChildren(
      ...list.map((p) =>
        h('li', { class: 'chip', 'data-testid': 'platform-item', 'data-id': p.id },
          h('span', { class: 'dot', style: `--c:${safeColor(p.color)}`, 'aria-hidden': 'true' }), p.name),
      ),
    );
  }

  // ---- totals -------------------------------------------------------------
  function renderTotals() {
    const t = store.totals();
    $('#total-all').textContent = money(t.cents);
    $('#total-hours').textContent = t.hours ? `· ${hours(Math.round(t.hours * 100) / 100)}` : '';
    const max = Math.max(1, ...t.byPlatform.map((p) => p.cents));
    $('#totals-platform').replaceChildren(
      ...t.byPlatform.map((p) =>
        h('li', { class: 'bar', 'data-testid': 'total-platform', 'data-platform-id': p.platform.id },
          h('span', { class: 'bar__label' }, h('span', { class: 'dot', style: `--c:${safeColor(p.platform.color)}`, 'aria-hidden': 'true' }), p.platform.name),
          h('span', { class: 'bar__value', 'data-testid': 'total-platform-amount' }, money(p.cents)),
          h('span', { class: 'bar__track', 'aria-hidden': 'true' },
            h('span', { class: 'bar__fill', style: `width:${((p.cents / max) * 100).toFixed(1)}%;--c:${safeColor(p.platform.color)}` })),
        ),
      ),
    );
    $('#totals-week').replaceChildren(
      ...t.byWeek.map((w) =>
        h('li', { class: 'week', 'data-testid': 'total-week', 'data-week': w.key },
          h('span', { class: 'week__key' }, w.key),
          h('span', { class: 'week__range muted' }, w.label),
          h('span', { class: 'week__value', 'data-testid': 'total-week-amount' }, money(w.cents)),
        ),
      ),
    );
  }

  // ---- the table ----------------------------------------------------------
  function renderRows(flashNew) {
    const list = store.sortedEarnings();
    const seen = new Set();
    let prev = null;
    for (const e of list) {
      seen.add(e.id);
      const p = store.platformOf(e);
      const sig = JSON.stringify([e.updatedAt, e.date, e.hours, e.amount, e.hourly_rate, e.notes, p.name, p.color]);
      let row = rows.get(e.id);
      if (!row) {
        row = { tr: h('tr', { 'data-testid': 'earning-row', 'data-id': e.id }), sig: null, editing: false };
        rows.set(e.id, row);
        if (flashNew) flash(row.tr, 'is-new');
      } else if (row.sig !== sig && !row.editing && flashNew) {
        flash(row.tr, 'is-updated');
      }
      if (row.sig !== sig) {
        if (row.editing) row.tr.dataset.changedElsewhere = 'true';
        else fillRow(row, e, p);
        row.sig = sig;
      }
      const expected = prev ? prev.nextSibling : tbody.firstChild;
      if (expected !== row.tr) tbody.insertBefore(row.tr, expected);
      prev = row.tr;
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        rows.delete(id);
      }
    }
    $('#earnings-empty').hidden = list.length > 0;
    $('#earnings-count').textContent = list.length ? `(${list.length})` : '';
  }

  function flash(tr, cls) {
    tr.classList.remove('is-new', 'is-updated');
    // Restart the animation if the row flashes twice in a row.
    void tr.offsetWidth;
    tr.classList.add(cls);
  }

  function fillRow(row, e, p) {
    row.tr.classList.remove('is-editing');
    delete row.tr.dataset.changedElsewhere;
    const edit = h('button', { type: 'button', class: 'button button--small button--ghost', 'data-testid': 'earning-edit', onclick: () => startEdit(e.id) }, 'Edit');
    const del = h('button', { type: 'button', class: 'button button--small button--ghost button--danger', 'data-testid': 'earning-delete', onclick: () => confirmDelete(e.id, del) }, 'Delete');
    row.tr.replaceChildren(
      h('td', { 'data-label': 'Date' }, h('time', { datetime: e.date }, formatDay(e.date))),
      h('td', { 'data-label': 'Platform' }, h('span', { class: 'dot', style: `--c:${safeColor(p.color)}`, 'aria-hidden': 'true' }), p.name),
      h('td', { class: 'num', 'data-label': 'Hours' }, hours(e.hours)),
      h('td', { class: 'num amount', 'data-label': 'Amount', 'data-testid': 'earning-amount-cell' }, moneyOf(e.amount)),
      h('td', { class: 'num muted', 'data-label': 'Rate' }, e.hourly_rate == null ? '—' : `${moneyOf(e.hourly_rate)}/h`),
      h('td', { class: 'notes', 'data-label': 'Notes' }, e.notes ?? ''),
      h('td', { class: 'actions' }, edit, del),
    );
  }

  function confirmDelete(id, button) {
    // Two clicks instead of a blocking confirm(): the page keeps updating.
    if (button.dataset.confirm !== 'true') {
      button.dataset.confirm = 'true';
      button.textContent = 'Confirm';
      setTimeout(() => {
        if (button.isConnected && button.dataset.confirm === 'true') {
          button.dataset.confirm = 'false';
          button.textContent = 'Delete';
        }
      }, 4000);
      return;
    }
    button.disabled = true;
    api.earnings
      .remove(id)
      .then(() => store.removeEarning(id))
      .catch((err) => {
        if (err.status === 404) store.removeEarning(id);
        else toast({ title: 'Could not delete', message: err.message, type: 'error', duration: 8000 });
        if (button.isConnected) button.disabled = false;
      });
  }

  function startEdit(id) {
    const row = rows.get(id);
    const e = store.earnings.get(id);
    if (!row || !e) return;
    row.editing = true;
    const tr = row.tr;
    tr.classList.add('is-editing');
    const platformSelect = h('select', { 'aria-label': 'Platform', 'data-testid': 'edit-platform' },
      [...store.platforms.values()].map((p) => h('option', { value: p.id, selected: p.id === e.platformId }, p.name)));
    const input = (name, props) => h('input', { 'aria-label': name, ...props });
    const date = input('Date', { type: 'date', value: e.date, 'data-testid': 'edit-date' });
    const hrs = input('Hours', { type: 'number', min: '0', step: '0.01', inputmode: 'decimal', value: e.hours ?? '', 'data-testid': 'edit-hours' });
    const amount = input('Amount', { type: 'number', min: '0', step: '0.01', inputmode: 'decimal', value: e.amount ?? '', 'data-testid': 'edit-amount' });
    const notes = input('Notes', { value: e.notes ?? '', maxlength: '1000', 'data-testid': 'edit-notes' });
    const cell = (label, field, control) =>
      h('td', { 'data-label': label, 'data-field': field }, control, h('small', { class: 'field-error', 'aria-live': 'polite' }));
    const save = h('button', { type: 'button', class: 'button button--small button--primary', 'data-testid': 'earning-save', onclick: () => saveEdit(id) }, 'Save');
    const cancel = h('button', { type: 'button', class: 'button button--small button--ghost', 'data-testid': 'earning-cancel', onclick: () => stopEdit(id) }, 'Cancel');
    tr.replaceChildren(
      cell('Date', 'date', date),
      cell('Platform', 'platformId', platformSelect),
      cell('Hours', 'hours', hrs),
      cell('Amount', 'amount', amount),
      h('td', { class: 'num muted', 'data-label': 'Rate' }, '—'),
      cell('Notes', 'notes', notes),
      h('td', { class: 'actions' }, save, cancel, h('p', { class: 'form-error', 'data-role': 'form-error', role: 'alert', hidden: true })),
    );
    row.controls = { platformSelect, date, hrs, amount, notes };
    tr.onkeydown = (ev) => {
      if (ev.key === 'Enter' && ev.target.matches('input')) {
        ev.preventDefault();
        saveEdit(id);
      } else if (ev.key === 'Escape') {
        stopEdit(id);
      }
    };
    amount.focus();
  }

  function stopEdit(id) {
    const row = rows.get(id);
    const e = store.earnings.get(id);
    if (!row) return;
    row.editing = false;
    row.tr.onkeydown = null;
    if (e) fillRow(row, e, store.platformOf(e));
    row.tr.querySelector('[data-testid="earning-edit"]')?.focus();
  }

  async function saveEdit(id) {
    const row = rows.get(id);
    const e = store.earnings.get(id);
    if (!row?.controls || !e) return;
    const c = row.controls;
    // PATCH only what changed: a concurrent edit of another field in another
    // tab must not be overwritten with the value this form started from.
    const changes = {};
    if (c.platformSelect.value && c.platformSelect.value !== e.platformId) changes.platformId = c.platformSelect.value;
    if (c.date.value !== e.date) changes.date = c.date.value;
    const h2 = numberOrNull(c.hrs.value);
    if (h2 !== (e.hours == null ? null : Number(e.hours))) changes.hours = h2;
    const a2 = numberOrNull(c.amount.value);
    if (a2 !== Number(e.amount)) changes.amount = a2;
    const n2 = c.notes.value.trim() || null;
    if (n2 !== (e.notes || null)) changes.notes = n2;
    if (!Object.keys(changes).length) {
      stopEdit(id);
      return;
    }
    await busy(row.tr, async () => {
      try {
        const updated = await api.earnings.update(id, changes);
        store.upsertEarning(updated);
        stopEdit(id);
      } catch (err) {
        if (err.status === 404) {
          store.removeEarning(id);
          toast({ title: 'Earning gone', message: 'It was deleted elsewhere.', type: 'warning', duration: 6000 });
        } else {
          showErrors(row.tr, err);
        }
      }
    });
  }

  store.addEventListener('change', (ev) => {
    const what = ev.detail;
    if (what === 'notifications' || what === 'user') return;
    if (what === 'all' || what === 'platforms') renderPlatforms();
    // Only flash what arrived after the first full render, not a reload.
    renderRows(initialised && what !== 'all');
    renderTotals();
    if (what === 'all') initialised = true;
  });

  return {
    reset() {
      for (const row of rows.values()) row.tr.remove();
      rows.clear();
      initialised = false;
      clearErrors(form);
      clearErrors(platformForm);
      $('#earning-date').value = today();
    },
  };
}
