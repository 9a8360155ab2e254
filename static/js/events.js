// The names of the server's events, the one list of them in the client.
//
// The stream needs every name up front (EventSource only dispatches named
// events to listeners registered by name) and the app switches on them, so
// both import them from here rather than spelling the strings out twice.

export const EVENT = Object.freeze({
  /** The stream is open: `{connectionId, userId}`; no `id:` on a resume. */
  CONNECTED: 'connected',
  /** The server no longer holds our position: reload, then carry on live. */
  SYNC_RESET: 'sync:reset',
  /** The token the stream was opened with has expired; the stream ends. */
  AUTH_EXPIRED: 'auth:expired',
  PLATFORM_NEW: 'platforms:new',
  EARNING_NEW: 'earnings:new',
  EARNING_UPDATED: 'earnings:updated',
  EARNING_DELETED: 'earnings:deleted',
  EXPENSE_NEW: 'expenses:new',
  EXPENSE_UPDATED: 'expenses:updated',
  EXPENSE_DELETED: 'expenses:deleted',
  INVOICE_NEW: 'invoices:new',
  INVOICE_UPDATED: 'invoices:updated',
  INVOICE_DELETED: 'invoices:deleted',
  NOTIFICATION: 'notification',
  NOTIFICATION_READ: 'notification:read',
  /** What EventSource calls a frame without an `event:` line. */
  MESSAGE: 'message',
});

/** Every name above, for registering stream listeners. */
export const EVENT_NAMES = Object.freeze(Object.values(EVENT));

/** `expenses:new` → ['expenses', 'new']: the record events the store applies alike. */
export function recordEvent(name) {
  const m = /^(expenses|invoices):(new|updated|deleted)$/.exec(name);
  return m ? [m[1], m[2]] : null;
}
