// The earnings table, with inline editing and two-click delete.
//
// Rows are keyed by earning id and patched in place rather than re-rendered,
// because events from other tabs arrive at any moment: a re-render would
// throw away the row someone is editing and the focus with it.

import * as api from './api.js';
import { $, busy, colorDot, confirmClick, h, numberOrNull, showErrors } from './dom.js';
import { formatDay, hours, moneyOf } from './format.js';

export class EarningsTable {
  #tbody;
  #store;
  #toast;
  /** id -> {tr, sig, editing, controls}; `sig` is what the row last showed. */
  #rows = new Map();

  constructor(tbody, { store, toast }) {
    this.#tbody = tbody;
    this.#store = store;
    this.#toast = toast;
  }

  /** Brings the rows in line with the store; `flashNew` highlights what arrived or changed. */
  render(flashNew) {
    const list = this.#store.sortedEarnings();
    const seen = new Set();
    let prev = null;
    for (const e of list) {
      seen.add(e.id);
      const row = this.#updateRow(e, flashNew);
      // Move only rows that are out of place, so focus inside a row survives.
      const expected = prev ? prev.nextSibling : this.#tbody.firstChild;
      if (expected !== row.tr) this.#tbody.insertBefore(row.tr, expected);
      prev = row.tr;
    }
    for (const [id, row] of this.#rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        this.#rows.delete(id);
      }
    }
    $('#earnings-empty').hidden = list.length > 0;
    $('#earnings-count').textContent = list.length ? `(${list.length})` : '';
  }

  /** Removes every row, for the next session. */
  clear() {
    for (const row of this.#rows.values()) row.tr.remove();
    this.#rows.clear();
  }

  /** The row of `e`, created or refilled if what it shows has changed. */
  #updateRow(e, flashNew) {
    const p = this.#store.platformOf(e);
    const sig = JSON.stringify([e.updatedAt, e.date, e.hours, e.amount, e.hourly_rate, e.notes, p.name, p.color]);
    let row = this.#rows.get(e.id);
    if (!row) {
      row = { tr: h('tr', { 'data-testid': 'earning-row', 'data-id': e.id }), sig: null, editing: false };
      this.#rows.set(e.id, row);
      if (flashNew) flash(row.tr, 'is-new');
    } else if (row.sig !== sig && !row.editing && flashNew) {
      flash(row.tr, 'is-updated');
    }
    if (row.sig !== sig) {
      // Never overwrite a form being typed into: mark the row instead.
      if (row.editing) row.tr.dataset.changedElsewhere = 'true';
      else this.#fillRow(row, e, p);
      row.sig = sig;
    }
    return row;
  }

  #fillRow(row, e, p) {
    row.tr.classList.remove('is-editing');
    delete row.tr.dataset.changedElsewhere;
    const edit = smallButton('button--ghost', 'earning-edit', 'Edit', () => this.#startEdit(e.id));
    const del = smallButton('button--ghost button--danger', 'earning-delete', 'Delete', () =>
      this.#confirmDelete(e.id, del));
    row.tr.replaceChildren(
      h('td', { 'data-label': 'Date' }, h('time', { datetime: e.date }, formatDay(e.date))),
      h('td', { 'data-label': 'Platform' }, colorDot(p.color), p.name),
      h('td', { class: 'num', 'data-label': 'Hours' }, hours(e.hours)),
      h('td', { class: 'num amount', 'data-label': 'Amount', 'data-testid': 'earning-amount-cell' }, moneyOf(e.amount)),
      h('td', { class: 'num muted', 'data-label': 'Rate' }, rate(e)),
      h('td', { class: 'notes', 'data-label': 'Notes' }, e.notes ?? ''),
      h('td', { class: 'actions' }, edit, del),
    );
  }

  #confirmDelete(id, button) {
    if (!confirmClick(button, 'Delete')) return;
    button.disabled = true;
    api.earnings
      .remove(id)
      .then(() => this.#store.removeEarning(id))
      .catch((err) => {
        if (err.status === 404) this.#store.removeEarning(id);
        else this.#toast({ title: 'Could not delete', message: err.message, type: 'error', duration: 8000 });
        if (button.isConnected) button.disabled = false;
      });
  }

  /** Turns the row into a form; Enter in a field saves, Escape cancels. */
  #startEdit(id) {
    const row = this.#rows.get(id);
    const e = this.#store.earnings.get(id);
    if (!row || !e) return;
    row.editing = true;
    row.tr.classList.add('is-editing');
    const controls = editControls(e, this.#store.platforms.values());
    const save = smallButton('button--primary', 'earning-save', 'Save', () => this.#saveEdit(id));
    const cancel = smallButton('button--ghost', 'earning-cancel', 'Cancel', () => this.#stopEdit(id));
    row.tr.replaceChildren(...editCells(controls, save, cancel));
    row.controls = controls;
    row.tr.onkeydown = (ev) => {
      if (ev.key === 'Enter' && ev.target.matches('input')) {
        ev.preventDefault();
        this.#saveEdit(id);
      } else if (ev.key === 'Escape') {
        this.#stopEdit(id);
      }
    };
    controls.amount.focus();
  }

  #stopEdit(id) {
    const row = this.#rows.get(id);
    const e = this.#store.earnings.get(id);
    if (!row) return;
    row.editing = false;
    row.tr.onkeydown = null;
    if (e) this.#fillRow(row, e, this.#store.platformOf(e));
    row.tr.querySelector('[data-testid="earning-edit"]')?.focus();
  }

  async #saveEdit(id) {
    const row = this.#rows.get(id);
    const e = this.#store.earnings.get(id);
    if (!row?.controls || !e) return;
    const changes = changedFields(row.controls, e);
    if (!Object.keys(changes).length) {
      this.#stopEdit(id);
      return;
    }
    await busy(row.tr, async () => {
      try {
        const updated = await api.earnings.update(id, changes);
        this.#store.upsertEarning(updated);
        this.#stopEdit(id);
      } catch (err) {
        if (err.status === 404) {
          this.#store.removeEarning(id);
          this.#toast({ title: 'Earning gone', message: 'It was deleted elsewhere.', type: 'warning', duration: 6000 });
        } else {
          showErrors(row.tr, err);
        }
      }
    });
  }
}

/** The hourly rate the server worked out, if it could (it needs hours). */
const rate = (e) => (e.hourly_rate == null ? '—' : `${moneyOf(e.hourly_rate)}/h`);

function smallButton(kind, testid, label, onclick) {
  return h('button', { type: 'button', class: `button button--small ${kind}`, 'data-testid': testid, onclick }, label);
}

function flash(tr, cls) {
  tr.classList.remove('is-new', 'is-updated');
  // Restart the animation if the row flashes twice in a row.
  void tr.offsetWidth;
  tr.classList.add(cls);
}

/** The inputs of a row being edited, filled with the earning's values. */
function editControls(e, platforms) {
  const platformSelect = h('select', { 'aria-label': 'Platform', 'data-testid': 'edit-platform' },
    [...platforms].map((p) => h('option', { value: p.id, selected: p.id === e.platformId }, p.name)));
  const input = (name, props) => h('input', { 'aria-label': name, ...props });
  const decimal = { type: 'number', min: '0', step: '0.01', inputmode: 'decimal' };
  return {
    platformSelect,
    date: input('Date', { type: 'date', value: e.date, 'data-testid': 'edit-date' }),
    hrs: input('Hours', { ...decimal, value: e.hours ?? '', 'data-testid': 'edit-hours' }),
    amount: input('Amount', { ...decimal, value: e.amount ?? '', 'data-testid': 'edit-amount' }),
    notes: input('Notes', { value: e.notes ?? '', maxlength: '1000', 'data-testid': 'edit-notes' }),
  };
}

/** The cells of a row being edited, each with a slot for its field's error. */
function editCells(c, save, cancel) {
  const error = () => h('small', { class: 'field-error', 'aria-live': 'polite' });
  const cell = (label, field, control) => h('td', { 'data-label': label, 'data-field': field }, control, error());
  return [
    cell('Date', 'date', c.date),
    cell('Platform', 'platformId', c.platformSelect),
    cell('Hours', 'hours', c.hrs),
    cell('Amount', 'amount', c.amount),
    h('td', { class: 'num muted', 'data-label': 'Rate' }, '—'),
    cell('Notes', 'notes', c.notes),
    h('td', { class: 'actions' },
      save, cancel, h('p', { class: 'form-error', 'data-role': 'form-error', role: 'alert', hidden: true })),
  ];
}

/**
 * Only what the form changed: a concurrent edit of another field in another
 * tab must not be overwritten with the value this form started from.
 */
function changedFields(c, e) {
  const changes = {};
  if (c.platformSelect.value && c.platformSelect.value !== e.platformId) changes.platformId = c.platformSelect.value;
  if (c.date.value !== e.date) changes.date = c.date.value;
  const hrs = numberOrNull(c.hrs.value);
  if (hrs !== (e.hours == null ? null : Number(e.hours))) changes.hours = hrs;
  const amount = numberOrNull(c.amount.value);
  if (amount !== Number(e.amount)) changes.amount = amount;
  const notes = c.notes.value.trim() || null;
  if (notes !== (e.notes || null)) changes.notes = notes;
  return changes;
}
