// Expenses: the add form (date, amount, category, an optional platform,
// notes) and the list with Delete, redrawn from the store when it changes,
// so an expense added or deleted in another tab shows here as soon as its
// event arrives.

import * as api from './api.js';
import { $, clearErrors, colorDot, h } from './dom.js';
import { formatDay, moneyOf, today } from './format.js';
import { KeyedRows } from './keyed-rows.js';
import { deleteButton, formBody, submitCreate } from './record-form.js';

const FIELDS = ['date', 'amount', 'category', 'platformId', 'notes'];

export function initExpensesView({ store, toast }) {
  const form = $('#expense-form');
  const select = $('#expense-platform');
  const rows = new KeyedRows($('#expenses-body'), {
    build: (x) => expenseRow(x, store, toast),
    // The platform's name and colour too: they are looked up, not stored.
    signature: (x) => JSON.stringify([x.date, x.amount, x.category, x.notes, platformOf(store, x)]),
  });

  form.elements.date.value = today();
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    submitCreate(form, () => api.expenses.create(formBody(form, FIELDS)), (created) => {
      store.upsertRecord('expenses', created);
      // Date, category and platform stay: the next expense is likely alike.
      for (const name of ['amount', 'notes']) form.elements[name].value = '';
      form.elements.amount.focus();
    });
  });

  store.addEventListener('change', (ev) => {
    const what = ev.detail;
    if (what === 'all' || what === 'platforms') renderPlatforms(store, select);
    if (what === 'all' || what === 'platforms' || what === 'expenses') {
      const list = store.sortedRecords('expenses');
      rows.render(list);
      $('#expenses-empty').hidden = list.length > 0;
    }
  });

  return {
    reset() {
      rows.clear();
      clearErrors(form);
      form.reset();
      form.elements.date.value = today();
    },
  };
}

/** The form's platform choice: none, or one of the user's platforms by name. */
function renderPlatforms(store, select) {
  const chosen = select.value;
  const list = [...store.platforms.values()].sort((a, b) => a.name.localeCompare(b.name));
  select.replaceChildren(h('option', { value: '' }, 'None'), ...list.map((p) => h('option', { value: p.id }, p.name)));
  select.value = list.some((p) => p.id === chosen) ? chosen : '';
}

/** The expense's platform, null when it has none. */
const platformOf = (store, x) => (x.platformId ? store.platformOf(x) : null);

function expenseRow(x, store, toast) {
  const platform = platformOf(store, x);
  return h('tr', { 'data-testid': 'expense-row', 'data-id': x.id },
    h('td', { 'data-label': 'Date' }, h('time', { datetime: x.date }, formatDay(x.date))),
    h('td', { 'data-label': 'Category', 'data-testid': 'expense-category-cell' }, x.category),
    h('td', { 'data-label': 'Platform', 'data-testid': 'expense-platform-cell' },
      platform ? [colorDot(platform.color), platform.name] : h('span', { class: 'muted' }, '—')),
    h('td', { class: 'num amount', 'data-label': 'Amount', 'data-testid': 'expense-amount-cell' }, moneyOf(x.amount)),
    h('td', { class: 'notes', 'data-label': 'Notes' }, x.notes ?? ''),
    h('td', { class: 'actions' },
      deleteButton({
        testid: 'expense-delete',
        remove: () => api.expenses.remove(x.id),
        removed: () => store.removeRecord('expenses', x.id),
        failed: (err) => toast({ title: 'Could not delete', message: err.message, type: 'error', duration: 8000 }),
      })));
}
