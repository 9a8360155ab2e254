// Expenses and invoices: their add forms and lists, the invoice status
// control, and the weekly earned / spent / net / outstanding summary, all
// redrawn from the store when it changes (so what another tab does shows
// here as soon as its event arrives).

import * as api from './api.js';
import { $, busy, clearErrors, h, numberOrNull, showErrors } from './dom.js';
import { formatDay, money, moneyOf, today } from './format.js';

/** The moves an invoice's status may make, as the server allows them. */
const NEXT_STATUS = {
  draft: [['sent', 'Mark sent'], ['void', 'Void']],
  sent: [['paid', 'Mark paid'], ['void', 'Void']],
  paid: [],
  void: [],
};

export function initLedgerView({ store }) {
  const expenseForm = $('#expense-form');
  const invoiceForm = $('#invoice-form');
  const resetDates = () => {
    expenseForm.elements.date.value = today();
    invoiceForm.elements.issueDate.value = today();
    invoiceForm.elements.dueDate.value = inDays(30);
  };
  resetDates();
  expenseForm.addEventListener('submit', (e) => {
    e.preventDefault();
    submit(expenseForm, api.expenses, expenseBody(expenseForm), (created) => {
      store.upsertRecord('expenses', created);
      for (const name of ['amount', 'notes']) expenseForm.elements[name].value = '';
    });
  });
  invoiceForm.addEventListener('submit', (e) => {
    e.preventDefault();
    submit(invoiceForm, api.invoices, invoiceBody(invoiceForm), (created) => {
      store.upsertRecord('invoices', created);
      for (const name of ['client', 'amount', 'notes']) invoiceForm.elements[name].value = '';
      invoiceForm.elements.number.value = nextNumber(store);
    });
  });

  store.addEventListener('change', (ev) => {
    const what = ev.detail;
    if (what === 'notifications' || what === 'user' || what === 'platforms') return;
    if (what === 'all' || what === 'expenses') renderExpenses(store);
    if (what === 'all' || what === 'invoices') renderInvoices(store, invoiceForm);
    renderWeeks(store.ledgerWeeks());
  });

  return {
    reset() {
      clearErrors(expenseForm);
      clearErrors(invoiceForm);
      resetDates();
    },
  };
}

async function submit(form, records, body, done) {
  await busy(form, async () => {
    try {
      done(await records.create(body));
      clearErrors(form);
    } catch (err) {
      showErrors(form, err);
    }
  });
}

/** A form's fields as a POST body: empty optional fields are not sent. */
function bodyOf(form, names, numbers = ['amount']) {
  const data = new FormData(form);
  const body = {};
  for (const name of names) {
    const raw = String(data.get(name) ?? '').trim();
    if (raw === '') continue;
    body[name] = numbers.includes(name) ? numberOrNull(raw) : raw;
  }
  return body;
}

const expenseBody = (form) => bodyOf(form, ['date', 'amount', 'category', 'notes']);
const invoiceBody = (form) => bodyOf(form, ['number', 'client', 'issueDate', 'dueDate', 'amount', 'notes']);

function inDays(n) {
  const d = new Date(Date.now() + n * 86_400_000);
  const pad = (x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** `INV-0008` after the highest `INV-nnnn` the user has. */
function nextNumber(store) {
  let highest = 0;
  for (const i of store.records.invoices.values()) {
    const m = /^INV-(\d+)$/.exec(i.number);
    if (m) highest = Math.max(highest, Number(m[1]));
  }
  return `INV-${String(highest + 1).padStart(4, '0')}`;
}

function removeButton(kind, r, label) {
  return h('button', {
    type: 'button',
    class: 'link-button',
    'data-testid': `${kind}-delete`,
    'aria-label': `Delete ${label}`,
    onclick: async (e) => {
      e.currentTarget.disabled = true;
      try {
        await api[kind].remove(r.id);
      } catch {
        e.currentTarget.disabled = false;
      }
    },
  }, 'Delete');
}

function renderExpenses(store) {
  const rows = store.sortedRecords('expenses');
  $('#expenses-body').replaceChildren(...rows.map((x) =>
    h('tr', { 'data-testid': 'expense-row', 'data-id': x.id },
      h('td', {}, formatDay(x.date)),
      h('td', {}, x.category),
      h('td', { class: 'num', 'data-testid': 'expense-amount' }, moneyOf(x.amount)),
      h('td', { class: 'notes' }, x.notes ?? ''),
      h('td', {}, removeButton('expenses', x, `expense of ${moneyOf(x.amount)}`)))));
  $('#expenses-empty').hidden = rows.length > 0;
}

function renderInvoices(store, form) {
  const rows = store.sortedRecords('invoices');
  $('#invoices-body').replaceChildren(...rows.map((i) => invoiceRow(i, store)));
  $('#invoices-empty').hidden = rows.length > 0;
  // Prefill the next number unless the user is typing one.
  if (document.activeElement !== form.elements.number) form.elements.number.value = nextNumber(store);
}

function invoiceRow(i, store) {
  const error = h('small', { class: 'field-error', 'aria-live': 'polite' });
  const move = (status) => async (e) => {
    e.currentTarget.disabled = true;
    error.textContent = '';
    try {
      store.upsertRecord('invoices', await api.invoices.update(i.id, { status }));
    } catch (err) {
      error.textContent = err.fields?.status ?? err.message;
      e.currentTarget.disabled = false;
    }
  };
  return h('tr', { 'data-testid': 'invoice-row', 'data-id': i.id, 'data-status': i.status },
    h('td', {}, i.number),
    h('td', {}, i.client),
    h('td', {}, formatDay(i.dueDate)),
    h('td', { class: 'num' }, moneyOf(i.amount)),
    h('td', {}, h('span', { class: `status status--${i.status}`, 'data-testid': 'invoice-status' }, i.status)),
    h('td', { class: 'actions' },
      ...(NEXT_STATUS[i.status] ?? []).map(([status, label]) =>
        h('button', { type: 'button', class: 'button button--small', 'data-testid': `invoice-mark-${status}`, onclick: move(status) }, label)),
      removeButton('invoices', i, `invoice ${i.number}`),
      error));
}

function renderWeeks(weeks) {
  $('#ledger-weeks').replaceChildren(...weeks.map((w) =>
    h('tr', { 'data-testid': 'ledger-week', 'data-week': w.key },
      h('th', { scope: 'row' }, w.key, ' ', h('span', { class: 'muted' }, w.label)),
      h('td', { class: 'num', 'data-testid': 'week-earned' }, money(w.earned)),
      h('td', { class: 'num', 'data-testid': 'week-spent' }, money(w.spent)),
      h('td', { class: 'num', 'data-testid': 'week-net' }, money(w.net)),
      h('td', { class: 'num', 'data-testid': 'week-outstanding' }, money(w.outstanding)))));
  $('#ledger-weeks-empty').hidden = weeks.length > 0;
}
