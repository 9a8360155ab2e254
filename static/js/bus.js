// The one BroadcastChannel all tabs of this origin share. It carries the
// leader's relayed stream events and connection state, and the session
// changes (login, logout, a refreshed token) that every tab must follow.
//
// BroadcastChannel never delivers a message back to the tab that posted it,
// so a sender always applies its own message locally as well.

const CHANNEL = 'earntrack';

const channel = typeof BroadcastChannel === 'function' ? new BroadcastChannel(CHANNEL) : null;
const handlers = new Map();

channel?.addEventListener('message', (e) => {
  const msg = e.data;
  if (!msg || typeof msg.type !== 'string') return;
  for (const fn of handlers.get(msg.type) ?? []) {
    try {
      fn(msg);
    } catch (err) {
      console.error(`bus handler for ${msg.type} failed`, err);
    }
  }
});

/** Tells the other tabs; `payload` must be structured-cloneable. */
export function post(type, payload = {}) {
  channel?.postMessage({ ...payload, type });
}

/** Listens to a message type; returns the function that stops listening. */
export function on(type, fn) {
  if (!handlers.has(type)) handlers.set(type, new Set());
  handlers.get(type).add(fn);
  return () => handlers.get(type)?.delete(fn);
}

/** False in the rare browser without BroadcastChannel: every tab then stands alone. */
export const shared = channel !== null;
