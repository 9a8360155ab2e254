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
  replace({ platforms, earnings, unread }) {
    this.platforms = new Map(platforms.map((p) => [p.id, p]));
    this.earnings = new Map(earnings.filter((e) => !this.#deleted.has(e.id)).map((e) => [e.id, e]));
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
