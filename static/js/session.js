// Keeps the cookie session alive for a page that stays open for days.
//
// Tokens are short-lived (24 h by default) and the server never accepts an
// expired one, not even to refresh it, so the refresh must happen while the
// token is still valid: at 80 % of its lifetime. The token itself stays in
// memory only to read its `exp`; requests carry the HttpOnly cookie.

import * as api from './api.js';
import * as bus from './bus.js';

const REFRESH_AT = 0.8;
const RETRY_MS = 30_000;
// setTimeout overflows past 2^31 - 1 ms and would fire at once.
const MAX_DELAY_MS = 2 ** 31 - 1;

/** The claims of a JWT, or null when it cannot be read. */
export function decodeJwt(token) {
  try {
    const part = token.split('.')[1];
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

export class Session {
  user = null;
  #onUser;
  #onLost;
  #timer = 0;
  #refreshAt = 0;
  #inflight = null;
  #unsubscribe;

  /**
   * @param onUser (user) after every token, so a changed role shows at once.
   * @param onLost (message) when the server no longer accepts the session.
   */
  constructor({ onUser, onLost }) {
    this.#onUser = onUser;
    this.#onLost = onLost;
    // Another tab refreshed: the cookie is shared, so this tab only needs to
    // move its own schedule instead of refreshing again.
    this.#unsubscribe = bus.on('token', (m) => this.#adopt(m.claims, m.user));
    document.addEventListener('visibilitychange', this.#catchUp);
    window.addEventListener('online', this.#catchUp);
  }

  /** Starts from a `{token, user}` answer of register, login or refresh. */
  begin({ token, user }) {
    this.#adopt(decodeJwt(token), user);
  }

  end() {
    clearTimeout(this.#timer);
    this.#unsubscribe();
    document.removeEventListener('visibilitychange', this.#catchUp);
    window.removeEventListener('online', this.#catchUp);
  }

  /**
   * Refreshes now. Resolves true on success, false when the session is gone;
   * rejects when the server cannot be reached (the caller may retry).
   */
  refresh() {
    this.#inflight ??= (async () => {
      try {
        const { token, user } = await api.auth.refresh();
        const claims = decodeJwt(token);
        this.#adopt(claims, user);
        bus.post('token', { claims: claims && { iat: claims.iat, exp: claims.exp }, user });
        return true;
      } catch (err) {
        if (err instanceof api.ApiError && err.status === 401) return false;
        throw err;
      } finally {
        this.#inflight = null;
      }
    })();
    return this.#inflight;
  }

  #adopt(claims, user) {
    if (user) {
      this.user = user;
      this.#onUser(user);
    }
    clearTimeout(this.#timer);
    if (!claims?.exp) return;
    // Measure the lifetime from the token's own iat rather than from this
    // machine's clock, which may be off: the token was minted just now.
    const nowS = Date.now() / 1000;
    const lifetimeMs = Math.max(0, (claims.exp - (claims.iat ?? nowS)) * 1000);
    const delay = Math.min(Math.max(lifetimeMs * REFRESH_AT, 1000), MAX_DELAY_MS);
    this.#refreshAt = Date.now() + delay;
    this.#timer = setTimeout(this.#scheduled, delay);
  }

  #scheduled = async () => {
    try {
      if (!(await this.refresh())) this.#onLost('Your session has expired. Please log in again.');
    } catch {
      clearTimeout(this.#timer);
      this.#timer = setTimeout(this.#scheduled, RETRY_MS);
    }
  };

  // Timers do not run while a laptop sleeps; refresh as soon as it wakes.
  #catchUp = () => {
    if (document.visibilityState !== 'hidden' && this.#refreshAt && Date.now() >= this.#refreshAt) {
      this.#refreshAt = Date.now() + RETRY_MS;
      this.#scheduled();
    }
  };
}
