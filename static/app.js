// EarnTrack web client: wires the session, the state, the live stream and
// the views together.
//
// Start-up order matters for "load, then subscribe, without a gap":
//   1. listen to the other tabs (the stream's relays) and buffer events;
//   2. load state over REST, keeping the stream position of the first read
//      (`EarnTrack-Event-Cursor`);
//   3. apply the buffered events, then join the leader election so that the
//      stream, if this tab holds it, resumes exactly at that position.
// Events that overlap the load are applied twice, which the store absorbs.

import * as api from './js/api.js';
import { backoff, sleep } from './js/backoff.js';
import * as bus from './js/bus.js';
import * as ui from './js/ui.js';
import { EVENT, recordEvent } from './js/events.js';
import { Store } from './js/state.js';
import { Session } from './js/session.js';
import { Stream } from './js/stream.js';
import { initAuthView } from './js/auth-view.js';
import { initEarningsView } from './js/earnings-view.js';
import { initExpensesView } from './js/expenses-view.js';
import { initInvoicesView } from './js/invoices-view.js';
import { initWeeklyTotalsView } from './js/weekly-totals-view.js';
import { initNotificationsView } from './js/notifications-view.js';
import { initAdminView } from './js/admin-view.js';

const MAX_EARNING_PAGES = 100;
const MAX_RECORD_PAGES = 100;
const MAX_UNREAD_PAGES = 10;
// 2 s, 4 s, 8 s... up to 30 s between attempts to load the state.
const LOAD_RETRY = { firstMs: 2000, maxMs: 30_000, jitter: false };

const store = new Store();
let session = null;
let stream = null;
// Bumped when a session ends, so work started for an older one stops.
let generation = 0;
// Events that arrive while state loads; null when not loading.
let pending = null;
let reloadRequested = false;

ui.initShell();
const authView = initAuthView({ onSignedIn: signedIn });
const earningsView = initEarningsView({ store, toast: ui.toast });
const expensesView = initExpensesView({ store, toast: ui.toast });
const invoicesView = initInvoicesView({ store, toast: ui.toast });
initWeeklyTotalsView({ store });
const notificationsView = initNotificationsView({ store });
const adminView = initAdminView({ store, toast: ui.toast });
ui.onTabChange((tab) => adminView.setActive(tab === 'operator'));

api.setSessionLostHandler(() => {
  bus.post('logout');
  endSession('Your session has expired. Please log in again.');
});

bus.on('logout', () => endSession('You were logged out in another tab.'));
bus.on('login', (m) => {
  if (session && store.user?.id === m.userId) return;
  if (session) endSession();
  resume();
});

// ---- events ---------------------------------------------------------------

function handleEvent(name, data, id) {
  if (pending) {
    // A reset during a load means the load may already be stale: load again.
    if (name === EVENT.SYNC_RESET) reloadRequested = true;
    else pending.push([name, data, id]);
    return;
  }
  applyEvent(name, data);
}

function applyEvent(name, data) {
  const record = recordEvent(name);
  if (record) {
    const [kind, change] = record;
    if (change === 'new') store.upsertRecord(kind, data);
    else if (change === 'updated') store.patchRecord(kind, data ?? {});
    else if (data?.id) store.removeRecord(kind, data.id);
    return;
  }
  switch (name) {
    case EVENT.PLATFORM_NEW:
      store.upsertPlatform(data);
      break;
    case EVENT.EARNING_NEW:
      store.upsertEarning(data);
      break;
    case EVENT.EARNING_UPDATED:
      store.patchEarning(data ?? {});
      break;
    case EVENT.EARNING_DELETED:
      if (data?.id) store.removeEarning(data.id);
      break;
    case EVENT.NOTIFICATION:
      // Only new ones pop up: a resume may replay what we already showed.
      if (store.addNotification(data)) ui.toast(data);
      break;
    case EVENT.NOTIFICATION_READ:
      store.markRead(data?.id);
      ui.dismissStickyToast(data?.id);
      break;
    case EVENT.SYNC_RESET:
      // The server no longer holds our position: what we have may miss
      // events, so start over from a fresh load; the stream carries on live.
      load(generation);
      break;
    default:
      // connected, auth:expired: the stream's business. Unknown: ignored.
      break;
  }
}

// ---- loading --------------------------------------------------------------

async function allPages(fetchPage, firstCursor, maxPages) {
  const items = [];
  let cursor = firstCursor;
  for (let i = 0; cursor && i < maxPages; i += 1) {
    const page = await fetchPage(cursor);
    items.push(...page.items);
    cursor = page.nextCursor;
  }
  return items;
}

/** Every expense or invoice (up to MAX_RECORD_PAGES pages of 100). */
async function allRecords(records) {
  const page = await records.page({ limit: 100 });
  return [...page.items, ...(await allPages((c) => records.page({ limit: 100, cursor: c }), page.nextCursor, MAX_RECORD_PAGES))];
}

/** Every unread notification, however many pages (up to MAX_UNREAD_PAGES more). */
async function loadUnread() {
  const unread = (c) => api.notifications.page({ unread: true, cursor: c });
  const page = await api.notifications.page({ unread: true });
  return [...page.items, ...(await allPages(unread, page.nextCursor, MAX_UNREAD_PAGES))];
}

/** Loads everything; resolves to the stream position of the load, or null if the session ended. */
async function load(gen) {
  if (pending) {
    reloadRequested = true;
    return null;
  }
  pending = [];
  let cursor = null;
  for (let attempt = 1; gen === generation; attempt += 1) {
    reloadRequested = false;
    try {
      // Earnings first: their cursor is the position everything is resumed
      // from, so the other lists must be read after it, never before.
      const first = await api.earnings.page({ limit: 100 });
      const [platforms, more, expenses, invoices, unread] = await Promise.all([
        api.platforms.list(),
        allPages((c) => api.earnings.page({ limit: 100, cursor: c }), first.nextCursor, MAX_EARNING_PAGES),
        allRecords(api.expenses),
        allRecords(api.invoices),
        loadUnread(),
      ]);
      if (gen !== generation) return null;
      cursor = first.eventCursor;
      store.replace({ platforms, earnings: [...first.items, ...more], expenses, invoices, unread });
      if (!reloadRequested) break;
    } catch (err) {
      if (gen !== generation || err.status === 401) return null;
      if (attempt === 1) {
        const message = `${err.message} Retrying…`;
        ui.toast({ title: 'Could not load your data', message, type: 'warning', duration: 6000 });
      }
      await sleep(backoff(attempt, LOAD_RETRY));
    }
  }
  if (gen !== generation) return null;
  const queued = pending;
  pending = null;
  for (const [name, data] of queued) applyEvent(name, data);
  return cursor;
}

// ---- session --------------------------------------------------------------

function signedIn(auth) {
  bus.post('login', { userId: auth.user?.id });
  startSession(auth);
}

async function startSession(auth) {
  const gen = ++generation;
  session = new Session({
    onUser: (user) => {
      store.setUser(user);
      ui.setUser(user);
    },
    onLost: (message) => {
      bus.post('logout');
      endSession(message);
    },
  });
  session.begin(auth);
  ui.setConnState('reconnecting', null);
  ui.showApp();
  stream = new Stream({
    onEvent: handleEvent,
    onState: ui.setConnState,
    refreshAuth: async () => {
      const ok = await session.refresh();
      if (!ok) {
        bus.post('logout');
        endSession('Your session has expired. Please log in again.');
      }
      return ok;
    },
  });
  const cursor = await load(gen);
  if (gen !== generation) return;
  stream.start(cursor);
}

function endSession(message) {
  if (!session) return;
  generation += 1;
  stream?.stop();
  stream = null;
  session.end();
  session = null;
  pending = null;
  store.clear();
  earningsView.reset();
  expensesView.reset();
  invoicesView.reset();
  notificationsView.reset();
  adminView.setActive(false);
  ui.showTab('earnings');
  ui.showAuth();
  authView.reset(message);
}

async function logout() {
  try {
    await api.auth.logout();
  } catch {
    // Even unreachable, forget the session here; the cookie expires anyway.
  }
  bus.post('logout');
  endSession();
}

/** On load: is there a cookie session? 200 → in, 401 → the login form. */
async function resume() {
  try {
    const auth = await api.auth.refresh();
    startSession(auth);
  } catch (err) {
    if (err.status === 401) {
      ui.showAuth();
      authView.reset();
    } else {
      ui.showBoot(`Cannot reach EarnTrack: ${err.message}`, resume);
    }
  }
}

document.getElementById('logout').addEventListener('click', logout);
resume();
