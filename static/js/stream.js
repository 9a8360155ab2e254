// Live updates, one connection per browser.
//
// Browsers allow six HTTP/1.1 connections per host, and an EventSource holds
// one for as long as the tab lives: seven tabs of the app would starve each
// other. So the tabs elect a leader with the Web Locks API; only the leader
// holds the stream and relays every event (name, id, parsed data) and its
// connection state to the other tabs over the BroadcastChannel. A lock is
// released by the browser when its tab goes away, so the next tab in line
// takes over and resumes from the last cursor it was relayed: nothing is lost
// at the hand-over, and duplicates are harmless because the app applies
// events idempotently.
//
// The leader prefers the EventSource and falls back to long-polling when a
// stream cannot be held open (a buffering proxy, the per-user stream limit),
// retrying the stream now and then.

import { backoff } from './backoff.js';
import * as bus from './bus.js';
import { EVENT, EVENT_NAMES } from './events.js';

const LOCK = 'earntrack-stream-leader';

// A buffering proxy holds the response back: neither `connected` nor an
// error arrives. (An unreachable server errors every few seconds instead.)
const CONNECTED_TIMEOUT_MS = 10_000;
// The server's `retry:` is about 3 s, so three drops of an opened stream
// within 10 s mean it cannot be held open; long-polling may get through.
const DROP_WINDOW_MS = 10_000;
const DROPS_BEFORE_FALLBACK = 3;
// Failed connection attempts (server down, network gone) before the badge
// says offline. EventSource keeps retrying by itself meanwhile, and polling
// would fail just the same, so these never cause a fallback.
const FAILURES_BEFORE_OFFLINE = 3;
const STREAM_RETRY_MS = 60_000;
const POLL_TIMEOUT_S = 25;

export class Stream {
  #onEvent;
  #onState;
  #refreshAuth;

  // The last event id this tab saw, its own or relayed: where a new stream
  // or poll resumes from.
  #cursor = null;
  #state = 'reconnecting';
  #transport = null;
  #leader = false;
  #stopped = false;
  #lockAbort = null;
  #releaseLock = null;

  // Bumped on every change of transport; a callback or loop holding an older
  // generation has been superseded and must do nothing.
  #gen = 0;
  #es = null;
  #watchdog = 0;
  #drops = [];
  #pollAbort = null;
  #wake = null;
  #lastStreamTry = 0;
  #unsubscribe = [];

  /**
   * @param onEvent (name, data, id) for every event, in order, from the
   *   stream, the long-poll or the leader tab.
   * @param onState (state, transport): state is live | reconnecting | offline.
   * @param refreshAuth async () => false when the session is gone for good.
   */
  constructor({ onEvent, onState, refreshAuth }) {
    this.#onEvent = onEvent;
    this.#onState = onState;
    this.#refreshAuth = refreshAuth;
    // Listening starts before the app loads its state, so that nothing the
    // leader relays during the load is missed (the app buffers it).
    this.#unsubscribe.push(
      bus.on('event', (m) => {
        if (this.#leader || this.#stopped) return;
        if (m.id) this.#cursor = m.id;
        this.#onEvent(m.name, m.data, m.id ?? null);
      }),
      bus.on('state', (m) => {
        if (!this.#leader && !this.#stopped) this.#setState(m.state, m.transport);
      }),
      bus.on('hello', () => {
        if (this.#leader) this.#announce();
      }),
    );
    window.addEventListener('online', this.#handleOnline);
    window.addEventListener('offline', this.#handleOffline);
  }

  get state() {
    return this.#state;
  }

  get cursor() {
    return this.#cursor;
  }

  get isLeader() {
    return this.#leader;
  }

  /** Joins the election; `cursor` is the position the app's state was loaded at. */
  start(cursor) {
    if (cursor) this.#cursor = cursor;
    if (!navigator.locks?.request) {
      // No Web Locks (e.g. plain http on a non-local host): each tab holds
      // its own stream, which works as long as few tabs are open.
      this.#lead();
      return;
    }
    this.#lockAbort = new AbortController();
    navigator.locks
      .request(LOCK, { signal: this.#lockAbort.signal }, () => this.#lead())
      .catch((err) => {
        if (err?.name !== 'AbortError') console.error('leader election failed', err);
      });
    // Ask an existing leader for its connection state, so the badge is right at once.
    bus.post('hello');
  }

  /** Leaves for good: on logout, or when the session is lost. */
  stop() {
    this.#stopped = true;
    this.#resetTransport();
    this.#lockAbort?.abort();
    this.#releaseLock?.();
    this.#leader = false;
    for (const off of this.#unsubscribe) off();
    window.removeEventListener('online', this.#handleOnline);
    window.removeEventListener('offline', this.#handleOffline);
  }

  // Holds the lock for as long as the returned promise is pending.
  #lead() {
    if (this.#stopped) return undefined;
    this.#leader = true;
    this.#setState('reconnecting', null);
    this.#openStream();
    return new Promise((resolve) => {
      this.#releaseLock = resolve;
    });
  }

  #setState(state, transport) {
    if (state === this.#state && transport === this.#transport) return;
    this.#state = state;
    this.#transport = transport;
    if (this.#leader) this.#announce();
    this.#onState(state, transport);
  }

  #announce() {
    bus.post('state', { state: this.#state, transport: this.#transport });
  }

  #deliver(name, data, id) {
    if (this.#leader) bus.post('event', { name, data, id });
    this.#onEvent(name, data, id);
  }

  /** Ends whatever transport is running; returns the new generation. */
  #resetTransport() {
    this.#gen += 1;
    clearTimeout(this.#watchdog);
    if (this.#es) {
      this.#es.close();
      this.#es = null;
    }
    this.#pollAbort?.abort();
    this.#pollAbort = null;
    this.#wake?.();
    return this.#gen;
  }

  #openStream() {
    if (this.#stopped) return;
    const gen = this.#resetTransport();
    this.#lastStreamTry = Date.now();
    this.#drops = [];
    let opened = false;
    let failures = 0;
    // The cursor goes in the query because EventSource cannot set headers; on
    // its own reconnects the browser sends Last-Event-ID, which the server
    // prefers over the (by then stale) query parameter.
    const url = this.#cursor ? `/events?lastEventId=${encodeURIComponent(this.#cursor)}` : '/events';
    const es = new EventSource(url);
    this.#es = es;
    this.#armWatchdog(gen);
    for (const name of EVENT_NAMES) {
      es.addEventListener(name, (e) => {
        if (gen === this.#gen) this.#handleStreamEvent(name, e);
      });
    }
    es.onopen = () => {
      opened = true;
    };
    es.onerror = () => {
      if (gen !== this.#gen) return;
      // CLOSED means a non-200 answer (401, 429, 503...), after which
      // EventSource never retries; the long-poll sees the real status.
      if (es.readyState === EventSource.CLOSED) {
        this.#fallBack('the stream was refused');
        return;
      }
      const now = Date.now();
      if (opened) {
        opened = false;
        failures = 0;
        this.#drops = this.#drops.filter((t) => now - t < DROP_WINDOW_MS);
        this.#drops.push(now);
        if (this.#drops.length >= DROPS_BEFORE_FALLBACK) {
          this.#fallBack('the stream keeps dropping');
          return;
        }
      } else {
        failures += 1;
      }
      const offline = navigator.onLine === false || failures >= FAILURES_BEFORE_OFFLINE;
      this.#setState(offline ? 'offline' : 'reconnecting', 'stream');
      this.#armWatchdog(gen);
    };
  }

  #armWatchdog(gen) {
    clearTimeout(this.#watchdog);
    this.#watchdog = setTimeout(() => {
      if (gen === this.#gen) this.#fallBack('no connected event within 10 s');
    }, CONNECTED_TIMEOUT_MS);
  }

  #handleStreamEvent(name, e) {
    let data;
    try {
      const envelope = JSON.parse(e.data);
      data = envelope && typeof envelope === 'object' && 'data' in envelope ? envelope.data : envelope;
    } catch {
      data = e.data;
    }
    // A resumed `connected` carries no id; lastEventId then repeats the
    // previous one, which is still the right place to resume from.
    const id = e.lastEventId || null;
    if (id) this.#cursor = id;
    if (name === EVENT.CONNECTED) {
      clearTimeout(this.#watchdog);
      this.#setState('live', 'stream');
    }
    this.#deliver(name, data, id);
    if (name === EVENT.AUTH_EXPIRED) this.#renewAuth();
  }

  // The server ends a stream when the token it was opened with expires.
  // Close it before EventSource retries with a stale cookie, get a fresh
  // token, then resume from the last id.
  async #renewAuth() {
    const gen = this.#resetTransport();
    this.#setState('reconnecting', null);
    let ok = true;
    try {
      ok = await this.#refreshAuth();
    } catch {
      // Network trouble: the transport's own retries deal with it.
    }
    if (ok && gen === this.#gen && !this.#stopped) this.#openStream();
  }

  #fallBack(reason) {
    console.info(`live updates: long-polling because ${reason}`);
    this.#poll();
  }

  /** Polls until the transport changes; every failure backs off before the next request. */
  async #poll() {
    if (this.#stopped) return;
    const gen = this.#resetTransport();
    let failures = 0;
    while (gen === this.#gen) {
      let res;
      try {
        res = await this.#requestPoll();
      } catch {
        if (gen !== this.#gen) return;
        failures += 1;
        this.#setState(failures >= 2 || navigator.onLine === false ? 'offline' : 'reconnecting', 'poll');
        await this.#sleep(backoff(failures));
        continue;
      }
      if (gen !== this.#gen) return;

      if (res.status === 401) {
        failures += 1;
        if (!(await this.#renewPollAuth(gen))) return;
        if (failures > 1) await this.#sleep(backoff(failures));
        continue;
      }
      if (!res.ok) {
        failures += 1;
        const retryAfter = Number(res.headers.get('retry-after'));
        this.#setState(failures >= 2 ? 'offline' : 'reconnecting', 'poll');
        await this.#sleep(retryAfter > 0 ? retryAfter * 1000 : backoff(failures));
        continue;
      }

      let body;
      try {
        body = await res.json();
      } catch {
        if (gen !== this.#gen) return;
        failures += 1;
        await this.#sleep(backoff(failures));
        continue;
      }
      if (gen !== this.#gen) return;
      const recovered = failures > 0;
      failures = 0;
      if (!this.#deliverPolled(gen, body)) return;
      // After an outage the stream may well work again; otherwise try it
      // once a minute, since polling costs a request per event batch.
      if (recovered || Date.now() - this.#lastStreamTry >= STREAM_RETRY_MS) {
        this.#openStream();
        return;
      }
    }
  }

  /** One long-poll from the cursor; `#resetTransport` aborts it. */
  #requestPoll() {
    const ctrl = new AbortController();
    this.#pollAbort = ctrl;
    const q = new URLSearchParams({ timeout: String(POLL_TIMEOUT_S) });
    if (this.#cursor) q.set('after', this.#cursor);
    return fetch(`/events/poll?${q}`, {
      credentials: 'same-origin',
      headers: { accept: 'application/json' },
      signal: ctrl.signal,
    });
  }

  /** After a poll's 401: true when polling may go on with a fresh token. */
  async #renewPollAuth(gen) {
    this.#setState('reconnecting', 'poll');
    let ok = true;
    try {
      ok = await this.#refreshAuth();
    } catch {
      // Unreachable now; the next poll finds out again.
    }
    return ok && gen === this.#gen;
  }

  /** Hands on a poll's events; false when a handler superseded this poll (renewed auth, stopped). */
  #deliverPolled(gen, body) {
    this.#setState('live', 'poll');
    for (const ev of body?.events ?? []) {
      if (ev.id) this.#cursor = ev.id;
      this.#deliver(ev.event, ev.data, ev.id ?? null);
      if (gen !== this.#gen) return false;
    }
    if (body?.cursor) this.#cursor = body.cursor;
    return true;
  }

  /** A back-off sleep that `online` or a transport change ends early. */
  #sleep(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.#wake === done) this.#wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wake = done;
    });
  }

  #handleOnline = () => {
    if (!this.#leader || this.#stopped) return;
    this.#setState('reconnecting', this.#transport);
    if (this.#es) {
      // Do not wait for the browser's next retry tick.
      if (this.#es.readyState !== EventSource.OPEN) this.#openStream();
    } else {
      this.#wake?.();
    }
  };

  #handleOffline = () => {
    if (this.#leader && !this.#stopped) this.#setState('offline', this.#transport);
  };
}
