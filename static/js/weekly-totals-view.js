// The weekly summary table: per ISO week, earned (earnings), spent
// (expenses), net (earned − spent) and outstanding (invoices marked sent, in
// the week they fall due), from the store's ledgerWeeks(). Redrawn whenever
// one of the three lists changes, from this tab or another.

import { $, h } from './dom.js';
import { money } from './format.js';

const SOURCES = new Set(['all', 'earnings', 'expenses', 'invoices']);

export function initWeeklyTotalsView({ store }) {
  store.addEventListener('change', (ev) => {
    if (SOURCES.has(ev.detail)) render(store.ledgerWeeks());
  });
}

function render(weeks) {
  $('#ledger-weeks').replaceChildren(...weeks.map(weekRow));
  $('#ledger-weeks-empty').hidden = weeks.length > 0;
}

function weekRow(w) {
  const cell = (testid, cents, extra = '') => h('td', { class: `num ${extra}`.trim(), 'data-testid': testid }, money(cents));
  return h('tr', { 'data-testid': 'ledger-week', 'data-week': w.key },
    h('th', { scope: 'row' }, w.key, ' ', h('span', { class: 'muted' }, w.label)),
    cell('week-earned', w.earned),
    cell('week-spent', w.spent),
    cell('week-net', w.net, w.net < 0 ? 'is-negative' : ''),
    cell('week-outstanding', w.outstanding));
}
