// The REST side of the contract. Every request is authenticated by the
// HttpOnly `earntrack_token` cookie, never by a header: the token we get back
// is only used to know when to refresh it (see session.js), so script on the
// page never needs to hold a credential that grants access.

/** An error answer of the API, `{"error":{"code","message","fields"?}}`. */
export class ApiError extends Error {
  constructor(status, code, message, fields = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.fields = fields;
  }
}

// Statuses that mean "your session is gone", as opposed to wrong credentials
// on the login form (`invalid_credentials`, also 401).
const SESSION_LOST = new Set(['missing_token', 'invalid_token', 'token_expired']);

let onSessionLost = () => {};

/** Called whenever a protected request answers that the session is gone. */
export function setSessionLostHandler(fn) {
  onSessionLost = fn;
}

/**
 * One request. Resolves to `{data, res}`; rejects with an ApiError whose
 * status is 0 when the server could not be reached at all.
 */
export async function request(method, path, { body, headers = {}, signal, quiet401 = false } = {}) {
  const init = {
    method,
    credentials: 'same-origin',
    headers: { accept: 'application/json', ...headers },
    signal,
  };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    if (err?.name === 'AbortError') throw err;
    throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection and try again.');
  }
  if (res.status === 204) return { data: null, res };
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // A proxy's HTML error page, for instance: keep the status, drop the body.
  }
  if (!res.ok) {
    const e = data && typeof data === 'object' && data.error ? data.error : {};
    const err = new ApiError(
      res.status,
      e.code ?? `http_${res.status}`,
      e.message ?? `The server answered ${res.status} ${res.statusText}`.trim(),
      e.fields ?? null,
    );
    if (res.status === 401 && SESSION_LOST.has(err.code) && !quiet401) onSessionLost(err);
    throw err;
  }
  return { data, res };
}

const enc = encodeURIComponent;

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v != null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** A random key so that a retried create (double click, flaky network) creates one earning. */
function idempotencyKey() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

export const auth = {
  register: (email, password, name) =>
    request('POST', '/api/auth/register', { body: name ? { email, password, name } : { email, password } }).then((r) => r.data),
  login: (email, password) => request('POST', '/api/auth/login', { body: { email, password } }).then((r) => r.data),
  // Used on load to discover whether a cookie session exists, so a 401 here is
  // an ordinary answer and must not trigger the session-lost path.
  refresh: () => request('POST', '/api/auth/refresh', { quiet401: true }).then((r) => r.data),
  logout: () => request('POST', '/api/auth/logout', { quiet401: true }).then(() => null),
};

export const platforms = {
  list: () => request('GET', '/api/platforms').then((r) => r.data?.items ?? []),
  create: (name, color) => request('POST', '/api/platforms', { body: { name, color } }).then((r) => r.data),
};

export const earnings = {
  /** One page plus the stream position the page was read at. */
  async page({ limit = 100, cursor } = {}) {
    const { data, res } = await request('GET', `/api/earnings${query({ limit, cursor })}`);
    return {
      items: data?.items ?? [],
      nextCursor: data?.nextCursor ?? null,
      eventCursor: res.headers.get('EarnTrack-Event-Cursor'),
    };
  },
  create: (input) =>
    request('POST', '/api/earnings', { body: input, headers: { 'Idempotency-Key': idempotencyKey() } }).then((r) => r.data),
  update: (id, changes) => request('PATCH', `/api/earnings/${enc(id)}`, { body: changes }).then((r) => r.data),
  remove: (id) => request('DELETE', `/api/earnings/${enc(id)}`).then(() => null),
};

/** Expenses and invoices: the same five routes as earnings. */
function records(kind) {
  return {
    async page({ limit = 100, cursor } = {}) {
      const { data } = await request('GET', `/api/${kind}${query({ limit, cursor })}`);
      return { items: data?.items ?? [], nextCursor: data?.nextCursor ?? null };
    },
    create: (input) =>
      request('POST', `/api/${kind}`, { body: input, headers: { 'Idempotency-Key': idempotencyKey() } }).then((r) => r.data),
    update: (id, changes) => request('PATCH', `/api/${kind}/${enc(id)}`, { body: changes }).then((r) => r.data),
    remove: (id) => request('DELETE', `/api/${kind}/${enc(id)}`).then(() => null),
  };
}

export const expenses = records('expenses');
export const invoices = records('invoices');

export const notifications = {
  async page({ unread = false, cursor, limit } = {}) {
    const { data, res } = await request('GET', `/api/notifications${query({ unread: unread ? 'true' : null, cursor, limit })}`);
    return {
      items: data?.items ?? [],
      nextCursor: data?.nextCursor ?? null,
      eventCursor: res.headers.get('EarnTrack-Event-Cursor'),
    };
  },
  markRead: (id) => request('POST', `/api/notifications/${enc(id)}/read`).then(() => null),
};

export const admin = {
  connections: () => request('GET', '/api/admin/connections').then((r) => r.data),
  disconnect: (userId) => request('DELETE', `/api/admin/users/${enc(userId)}/connections`).then((r) => r.data),
  notify: (body) => request('POST', '/api/admin/notifications', { body }).then((r) => r.data),
};
