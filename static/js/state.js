// The client's copy of the user's data and the rules for applying events.
//
// Every apply is idempotent: the same event may arrive twice (a resume that
// replays what a REST load already returned, a new leader tab resuming from
// an older cursor), and applying it again must change nothing.

import { isoWeek, toCents } from './format.js';

const time = (ts) => {
  const t = Date.parse(ts);
  return Number.isNaN(t) ? 0 : t;
};

export class Store extends EventTarget {
  user = null;
  platforms = new Map();
  earnings = new Map();
  /** Expenses and invoices by id, each applied by the same rules as earnings. */
  records = { expenses: new Map(), invoices: new Map() };
  /** Every notification we know of, by id; `unread` holds the unread ones' ids. */
  notifications = new Map();
  unread = new Set();
  /** Where the history panel continues: undefined = not loaded, null = all loaded. */
  historyCursor = undefined;
  // Deleted ids, so a stale `earnings:new` replayed after the delete cannot
  // bring a row back. Ids are UUIDs and never reused.
  #deleted = new Set();

  #changed(what) {
    this.dispatchEvent(new CustomEvent('change', { detail: what }));
  }

  clear() {
    this.user = null;
    this.platforms.clear();
    this.earnings.clear();
    for (const map of Object.values(this.records)) map.clear();
    this.notifications.clear();
    this.unread.clear();
    this.historyCursor = undefined;
    this.#deleted.clear();
    this.#changed('all');
  }

  setUser(user) {
    this.user = user;
    this.#changed('user');
  }

  /** Replaces everything after a (re)load; events buffered meanwhile are applied afterwards. */
  replace({ platforms, earnings, expenses = [], invoices = [], unread }) {
    const live = (items) => new Map(items.filter((r) => !this.#deleted.has(r.id)).map((r) => [r.id, r]));
    this.platforms = new Map(platforms.map((p) => [p.id, p]));
    this.earnings = live(earnings);
    this.records = { expenses: live(expenses), invoices: live(invoices) };
    this.unread = new Set(unread.map((n) => n.id));
    for (const n of unread) this.notifications.set(n.id, n);
    // The history is reloaded lazily the next time the panel opens.
    this.historyCursor = undefined;
    this.#changed('all');
  }

  upsertPlatform(p) {
    if (!p?.id) return;
    this.platforms.set(p.id, { ...this.platforms.get(p.id), ...p });
    this.#changed('platforms');
  }

  /** A whole earning: from `earnings:new` or from our own POST/PATCH answer. */
  upsertEarning(e) {
    if (!e?.id || this.#deleted.has(e.id)) return;
    const current = this.earnings.get(e.id);
    // A replayed `earnings:new` must not undo a later update we already have.
    if (current && time(current.updatedAt) > time(e.updatedAt)) return;
    this.earnings.set(e.id, e);
    this.#changed('earnings');
  }

  /** `earnings:updated` = {id, changes, updatedAt}. */
  patchEarning({ id, changes, updatedAt }) {
    const current = this.earnings.get(id);
    if (!current || !changes) return;
    // Already applied: our own PATCH answer carried the same updatedAt.
    if (updatedAt && time(current.updatedAt) >= time(updatedAt)) return;
    const next = { ...current, ...changes, updatedAt: updatedAt ?? current.updatedAt };
    if ('platformId' in changes && !('platform' in changes)) {
      next.platform = this.platforms.get(changes.platformId) ?? next.platform;
    }
    this.earnings.set(id, next);
    this.#changed('earnings');
  }

  removeEarning(id) {
    this.#deleted.add(id);
    if (this.earnings.delete(id)) this.#changed('earnings');
  }

  /** A whole expense or invoice (`{kind}:new` or our own answer); as upsertEarning. */
  upsertRecord(kind, r) {
    const map = this.records[kind];
    if (!map || !r?.id || this.#deleted.has(r.id)) return;
    const current = map.get(r.id);
    if (current && time(current.updatedAt) > time(r.updatedAt)) return;
    map.set(r.id, r);
    this.#changed(kind);
  }

  /** `{kind}:updated` = {id, changes, updatedAt}; as patchEarning. */
  patchRecord(kind, { id, changes, updatedAt } = {}) {
    const map = this.records[kind];
    const current = map?.get(id);
    if (!current || !changes) return;
    if (updatedAt && time(current.updatedAt) >= time(updatedAt)) return;
    map.set(id, { ...current, ...changes, updatedAt: updatedAt ?? current.updatedAt });
    this.#changed(kind);
  }

  removeRecord(kind, id) {
    this.#deleted.add(id);
    if (this.records[kind]?.delete(id)) this.#changed(kind);
  }

  /** Newest first by the record's date (an invoice's issue date), as the API lists them. */
  sortedRecords(kind) {
    const day = (r) => r.date ?? r.issueDate ?? '';
    return [...(this.records[kind]?.values() ?? [])].sort(
      (a, b) => (day(a) < day(b) ? 1 : day(a) > day(b) ? -1 : time(b.createdAt) - time(a.createdAt)),
    );
  }

  /**
   * Per ISO week, newest first: earned (earnings by date), spent (expenses
   * by date), net, and outstanding (sent invoices, by the week they are due).
   */
  ledgerWeeks() {
    const weeks = new Map();
    const add = (day, field, amount) => {
      const w = isoWeek(day);
      const row = weeks.get(w.key) ?? { ...w, earned: 0, spent: 0, outstanding: 0 };
      row[field] += toCents(amount);
      weeks.set(w.key, row);
    };
    for (const e of this.earnings.values()) add(e.date, 'earned', e.amount);
    for (const x of this.records.expenses.values()) add(x.date, 'spent', x.amount);
    for (const i of this.records.invoices.values()) if (i.status === 'sent') add(i.dueDate, 'outstanding', i.amount);
    return [...weeks.values()]
      .map((w) => ({ ...w, net: w.earned - w.spent }))
      .sort((a, b) => (a.key < b.key ? 1 : -1));
  }

  /** Returns true when the notification is new to this tab (so it deserves a toast). */
  addNotification(n, { unread = true } = {}) {
    if (!n?.id || this.notifications.has(n.id)) return false;
    this.notifications.set(n.id, n);
    if (unread) this.unread.add(n.id);
    this.#changed('notifications');
    return true;
  }

  /** Merges a page of the history panel without touching read state we already know. */
  addHistory(items, nextCursor) {
    for (const n of items) {
      if (!this.notifications.has(n.id)) {
        this.notifications.set(n.id, n);
        if (isUnreadFlag(n)) this.unread.add(n.id);
      }
    }
    this.historyCursor = nextCursor;
    this.#changed('notifications');
  }

  markRead(id) {
    if (this.unread.delete(id)) this.#changed('notifications');
  }

  platformOf(e) {
    return this.platforms.get(e.platformId) ?? e.platform ?? { id: e.platformId, name: 'Unknown', color: '#888888' };
  }

  /** Newest date first, then newest created, as the API lists them. */
  sortedEarnings() {
    return [...this.earnings.values()].sort(
      (a, b) => (a.date < b.date ? 1 : a.date > b.date ? -1 : time(b.createdAt) - time(a.createdAt)),
    );
  }

  sortedNotifications() {
    return [...this.notifications.values()].sort((a, b) => time(b.timestamp ?? b.createdAt) - time(a.timestamp ?? a.createdAt));
  }

  totals() {
    const byPlatform = new Map();
    const byWeek = new Map();
    let cents = 0;
    let hoursTotal = 0;
    for (const e of this.earnings.values()) {
      const c = toCents(e.amount);
      const h = Number(e.hours) || 0;
      cents += c;
      hoursTotal += h;
      const p = this.platformOf(e);
      const pt = byPlatform.get(p.id) ?? { platform: p, cents: 0, hours: 0, count: 0 };
      pt.cents += c;
      pt.hours += h;
      pt.count += 1;
      byPlatform.set(p.id, pt);
      const w = isoWeek(e.date);
      const wt = byWeek.get(w.key) ?? { ...w, cents: 0, hours: 0, count: 0 };
      wt.cents += c;
      wt.hours += h;
      wt.count += 1;
      byWeek.set(w.key, wt);
    }
    return {
      cents,
      hours: hoursTotal,
      byPlatform: [...byPlatform.values()].sort((a, b) => b.cents - a.cents),
      byWeek: [...byWeek.values()].sort((a, b) => (a.key < b.key ? 1 : -1)),
    };
  }
}

// The contract does not name the read flag of a listed notification; accept
// the usual spellings and otherwise treat it as read (it came from history,
// and unread ones are loaded separately with ?unread=true).
function isUnreadFlag(n) {
  if (typeof n.read === 'boolean') return !n.read;
  if (typeof n.unread === 'boolean') return n.unread;
  if ('readAt' in n) return n.readAt == null;
  if ('read_at' in n) return n.read_at == null;
  return false;
}
