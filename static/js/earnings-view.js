// Earnings: the add form, the platforms, the totals, and the table (its own
// module, earnings-table.js), all redrawn from the store when it changes.

import * as api from './api.js';
import { $, busy, clearErrors, colorDot, h, numberOrNull, safeColor, showErrors } from './dom.js';
import { EarningsTable } from './earnings-table.js';
import { hours, money, today } from './format.js';

export function initEarningsView({ store, toast }) {
  const form = $('#earning-form');
  const platformForm = $('#platform-form');
  const select = $('#earning-platform');
  const table = new EarningsTable($('#earnings-body'), { store, toast });
  let initialised = false;

  $('#earning-date').value = today();
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    addEarning(form, store);
  });
  platformForm.addEventListener('submit', (e) => {
    e.preventDefault();
    addPlatform(platformForm, select, store);
  });

  store.addEventListener('change', (ev) => {
    const what = ev.detail;
    if (what === 'notifications' || what === 'user' || what === 'expenses' || what === 'invoices') return;
    if (what === 'all' || what === 'platforms') renderPlatforms(store, select);
    // Only flash what arrived after the first full render, not a reload.
    table.render(initialised && what !== 'all');
    renderTotals(store.totals());
    if (what === 'all') initialised = true;
  });

  return {
    reset() {
      table.clear();
      initialised = false;
      clearErrors(form);
      clearErrors(platformForm);
      $('#earning-date').value = today();
    },
  };
}

// ---- add an earning -----------------------------------------------------------

async function addEarning(form, store) {
  const body = earningFromForm(form);
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
      // The platform and date stay: the next earning is likely alike.
      for (const name of ['amount', 'hours', 'notes']) form.elements[name].value = '';
      form.elements.amount.focus();
    } catch (err) {
      showErrors(form, err);
    }
  });
}

/** The POST body; optional fields left empty are not sent at all. */
function earningFromForm(form) {
  const data = new FormData(form);
  const body = { platformId: data.get('platformId'), date: data.get('date'), amount: numberOrNull(data.get('amount')) };
  const hoursValue = numberOrNull(data.get('hours'));
  if (hoursValue != null) body.hours = hoursValue;
  const notes = String(data.get('notes') ?? '').trim();
  if (notes) body.notes = notes;
  return body;
}

// ---- platforms ----------------------------------------------------------------

async function addPlatform(form, select, store) {
  const name = form.elements.name.value.trim();
  const color = form.elements.color.value;
  if (!name) {
    showErrors(form, { message: 'Give the platform a name.', fields: { name: 'Required' } });
    return;
  }
  await busy(form, async () => {
    try {
      const created = await api.platforms.create(name, color);
      store.upsertPlatform(created);
      clearErrors(form);
      // Typed on while the request ran? Then keep what was typed.
      if (form.elements.name.value.trim() === name) form.elements.name.value = '';
      if (!select.value) select.value = created.id;
    } catch (err) {
      showErrors(form, err);
    }
  });
}

/** The add form's choice of platform and the list of chips, by name. */
function renderPlatforms(store, select) {
  const list = [...store.platforms.values()].sort((a, b) => a.name.localeCompare(b.name));
  const chosen = select.value;
  select.replaceChildren(
    ...(list.length ? [] : [h('option', { value: '', disabled: true, selected: true }, 'Add a platform first')]),
    ...list.map((p) => h('option', { value: p.id }, p.name)),
  );
  if (list.some((p) => p.id === chosen)) select.value = chosen;
  $('#platform-list').replaceChildren(
    ...list.map((p) =>
      h('li', { class: 'chip', 'data-testid': 'platform-item', 'data-id': p.id }, colorDot(p.color), p.name)),
  );
}

// ---- totals -------------------------------------------------------------------

/** @param t the store's totals(): all, per platform (a bar each) and per ISO week. */
function renderTotals(t) {
  $('#total-all').textContent = money(t.cents);
  $('#total-hours').textContent = t.hours ? `· ${hours(Math.round(t.hours * 100) / 100)}` : '';
  const max = Math.max(1, ...t.byPlatform.map((p) => p.cents));
  $('#totals-platform').replaceChildren(...t.byPlatform.map((p) => platformBar(p, max)));
  $('#totals-week').replaceChildren(...t.byWeek.map(weekLine));
}

/** A platform's total, with a bar as long as its share of the largest total. */
function platformBar({ platform, cents }, max) {
  const fill = { width: `${((cents / max) * 100).toFixed(1)}%`, '--c': safeColor(platform.color) };
  return h('li', { class: 'bar', 'data-testid': 'total-platform', 'data-platform-id': platform.id },
    h('span', { class: 'bar__label' }, colorDot(platform.color), platform.name),
    h('span', { class: 'bar__value', 'data-testid': 'total-platform-amount' }, money(cents)),
    h('span', { class: 'bar__track', 'aria-hidden': 'true' }, h('span', { class: 'bar__fill', style: fill })),
  );
}

function weekLine(w) {
  return h('li', { class: 'week', 'data-testid': 'total-week', 'data-week': w.key },
    h('span', { class: 'week__key' }, w.key),
    h('span', { class: 'week__range muted' }, w.label),
    h('span', { class: 'week__value', 'data-testid': 'total-week-amount' }, money(w.cents)),
  );
}
