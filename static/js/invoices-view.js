// Invoices: the add form, its number prefilled with the next INV-0001-style
// number, and the list, where each invoice offers only the status moves the
// server allows, and Delete. Redrawn from the store when it changes, so a
// status set in another tab shows here as soon as its event arrives.

import * as api from './api.js';
import { $, clearErrors, confirmClick, h } from './dom.js';
import { addDays, formatDay, moneyOf, today } from './format.js';
import { KeyedRows } from './keyed-rows.js';
import { deleteButton, formBody, submitCreate } from './record-form.js';

/**
 * The server's status machine: draft → sent → paid, and draft or sent →
 * void. Paid and void are final, so they offer nothing. Anything else would
 * be refused with a 422 on `status`; offering it would only invite that.
 */
const MOVES = {
  draft: [['sent', 'Mark sent'], ['void', 'Void']],
  sent: [['paid', 'Mark paid'], ['void', 'Void']],
};
/** Moves that cannot be undone ask for a confirming click, as Delete does. */
const CONFIRMED = new Set(['void']);

const FIELDS = ['number', 'client', 'issueDate', 'dueDate', 'amount', 'notes'];
const DUE_AFTER_DAYS = 30;

export function initInvoicesView({ store, toast }) {
  const form = $('#invoice-form');
  const number = form.elements.number;
  const rows = new KeyedRows($('#invoices-body'), {
    build: (i) => invoiceRow(i, store, toast),
    signature: (i) => JSON.stringify([i.number, i.client, i.issueDate, i.dueDate, i.amount, i.status, i.notes]),
  });
  // The number this form last filled in. Invoices arriving from other tabs
  // move the suggestion on, but never over a number the user typed.
  let suggested = '';
  const suggestNumber = () => {
    if (number.value !== '' && number.value !== suggested) return;
    suggested = nextInvoiceNumber(store.records.invoices.values());
    number.value = suggested;
  };
  const resetDates = () => {
    form.elements.issueDate.value = today();
    form.elements.dueDate.value = addDays(today(), DUE_AFTER_DAYS);
  };

  resetDates();
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    submitCreate(form, () => createInvoice(formBody(form, FIELDS)), (created) => {
      for (const name of ['number', 'client', 'amount', 'notes']) form.elements[name].value = '';
      store.upsertRecord('invoices', created);
      suggestNumber();
      form.elements.client.focus();
    });
  });

  store.addEventListener('change', (ev) => {
    const what = ev.detail;
    if (what !== 'all' && what !== 'invoices') return;
    const list = store.sortedRecords('invoices');
    rows.render(list);
    $('#invoices-empty').hidden = list.length > 0;
    suggestNumber();
  });

  return {
    reset() {
      rows.clear();
      clearErrors(form);
      form.reset();
      suggested = '';
      resetDates();
    },
  };
}

/** A 409 means the number is taken (numbers are unique per user): say so beside it. */
async function createInvoice(body) {
  try {
    return await api.invoices.create(body);
  } catch (err) {
    if (err.status === 409 && !err.fields) err.fields = { number: 'is already used by another invoice' };
    throw err;
  }
}

/** `INV-0008` after the highest `INV-nnnn` among `invoices`; other numbering is ignored. */
export function nextInvoiceNumber(invoices) {
  let highest = 0;
  for (const i of invoices) {
    const m = /^INV-(\d+)$/.exec(i.number ?? '');
    if (m) highest = Math.max(highest, Number(m[1]));
  }
  return `INV-${String(highest + 1).padStart(4, '0')}`;
}

function invoiceRow(i, store, toast) {
  // A refused move is explained in the row it was made in.
  const error = h('small', { class: 'field-error', 'aria-live': 'polite', 'data-testid': 'invoice-row-error' });
  const moves = (MOVES[i.status] ?? []).map(([status, label]) => {
    const button = h('button', {
      type: 'button',
      class: `button button--small ${status === 'void' ? 'button--ghost button--danger' : ''}`,
      'data-testid': `invoice-mark-${status}`,
    }, label);
    button.addEventListener('click', () => {
      if (CONFIRMED.has(status) && !confirmClick(button, label)) return;
      move(i, status, { button, error, store });
    });
    return button;
  });
  return h('tr', { 'data-testid': 'invoice-row', 'data-id': i.id, 'data-status': i.status },
    h('td', { 'data-label': 'Number', 'data-testid': 'invoice-number-cell' }, i.number),
    h('td', { 'data-label': 'Client' }, i.client),
    h('td', { 'data-label': 'Issued' }, h('time', { datetime: i.issueDate }, formatDay(i.issueDate))),
    h('td', { 'data-label': 'Due' }, h('time', { datetime: i.dueDate }, formatDay(i.dueDate))),
    h('td', { class: 'num amount', 'data-label': 'Amount', 'data-testid': 'invoice-amount-cell' }, moneyOf(i.amount)),
    h('td', { 'data-label': 'Status' },
      h('span', { class: `status status--${i.status}`, 'data-testid': 'invoice-status' }, i.status)),
    h('td', { class: 'actions' },
      ...moves,
      deleteButton({
        testid: 'invoice-delete',
        remove: () => api.invoices.remove(i.id),
        removed: () => store.removeRecord('invoices', i.id),
        failed: (err) => toast({ title: 'Could not delete', message: err.message, type: 'error', duration: 8000 }),
      }),
      error));
}

/** PATCHes the status; the answer is applied at once, the event later changes nothing. */
async function move(invoice, status, { button, error, store }) {
  button.disabled = true;
  error.textContent = '';
  try {
    store.upsertRecord('invoices', await api.invoices.update(invoice.id, { status }));
  } catch (err) {
    if (err.status === 404) {
      store.removeRecord('invoices', invoice.id);
      return;
    }
    // Most likely another tab moved it first; its event redraws the row.
    error.textContent = err.fields?.status ?? err.message;
    if (button.isConnected) button.disabled = false;
  }
}
