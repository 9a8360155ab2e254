// The page shell: which view shows, the connection badge, the user line and
// the toasts. The panels with real content live in their own *-view.js.

import { $, h } from './dom.js';

const TYPES = new Set(['success', 'error', 'info', 'warning']);
const ICONS = { success: '✓', error: '!', info: 'i', warning: '!' };
// More than this and the oldest go: a long-offline tab catching up must not
// bury the page. They all stay in the bell's history.
const MAX_TOASTS = 4;

export function showBoot(message, retry) {
  const boot = $('#boot');
  boot.replaceChildren(message, ' ', retry ? h('button', { type: 'button', class: 'button button--small', onclick: retry }, 'Try again') : '');
  boot.hidden = false;
  $('#auth-view').hidden = true;
  $('#app-view').hidden = true;
  $('#session-bar').hidden = true;
}

export function showAuth() {
  $('#boot').hidden = true;
  $('#app-view').hidden = true;
  $('#session-bar').hidden = true;
  $('#auth-view').hidden = false;
  clearToasts();
}

export function showApp() {
  $('#boot').hidden = true;
  $('#auth-view').hidden = true;
  $('#app-view').hidden = false;
  $('#session-bar').hidden = false;
}

export function setUser(user) {
  const label = user?.name || user?.email || '';
  const el = $('#user-name');
  el.textContent = label;
  el.title = user?.email ?? '';
  $('#tabs').hidden = user?.role !== 'admin';
  if (user?.role !== 'admin') showTab('earnings');
}

let tabListener = () => {};

/** Called with the tab name whenever the view changes (the admin view polls only while shown). */
export function onTabChange(fn) {
  tabListener = fn;
}

export function showTab(name) {
  for (const tab of document.querySelectorAll('#tabs [data-view]')) {
    if (tab.dataset.view === name) tab.setAttribute('aria-current', 'page');
    else tab.removeAttribute('aria-current');
  }
  $('#earnings-view').hidden = name !== 'earnings';
  $('#operator-view').hidden = name !== 'operator';
  tabListener(name);
}

export function initShell() {
  for (const tab of document.querySelectorAll('#tabs [data-view]')) {
    tab.addEventListener('click', () => showTab(tab.dataset.view));
  }
}

const STATE_TEXT = {
  live: 'Live updates are on',
  reconnecting: 'Reconnecting to live updates…',
  offline: 'Offline: changes from other devices will show when the connection is back',
};

/** The badge's text is exactly the state name; tests and people both read it. */
export function setConnState(state, transport) {
  const el = $('#conn-state');
  el.textContent = state;
  el.dataset.state = state;
  el.dataset.transport = transport ?? '';
  el.title = `${STATE_TEXT[state] ?? state}${state === 'live' && transport === 'poll' ? ' (long-polling)' : ''}`;
}

/**
 * Shows a toast. `duration` in ms hides it by itself (paused while hovered or
 * focused, so it can be read); 0 or null keeps it until dismissed or read.
 */
export function toast({ id, title, message, type, duration, dismissible = true }) {
  const container = $('#toasts');
  if (id && container.querySelector(`[data-id="${CSS.escape(String(id))}"]`)) return;
  const kind = TYPES.has(type) ? type : 'info';
  const sticky = !(typeof duration === 'number' && duration > 0);
  const el = h(
    'div',
    {
      class: `toast toast--${kind}`,
      'data-testid': 'toast',
      'data-id': id,
      'data-type': kind,
      'data-sticky': sticky ? 'true' : 'false',
      // Errors interrupt; the rest wait for the container's polite turn.
      role: kind === 'error' ? 'alert' : null,
    },
    h('span', { class: 'toast__icon', 'aria-hidden': 'true' }, ICONS[kind]),
    h(
      'div',
      { class: 'toast__body' },
      h('p', { class: 'toast__title', 'data-testid': 'toast-title' }, title ?? ''),
      message ? h('p', { class: 'toast__message', 'data-testid': 'toast-message' }, message) : null,
    ),
    dismissible !== false
      ? h('button', { type: 'button', class: 'toast__close', 'data-testid': 'toast-close', 'aria-label': `Dismiss: ${title ?? 'notification'}`, onclick: () => removeToast(el) }, '×')
      : null,
  );
  container.append(el);
  while (container.children.length > MAX_TOASTS) removeToast(container.firstElementChild, true);
  if (!sticky) autoHide(el, duration);
}

/** Removes the toast of a notification read elsewhere, if it would otherwise stay. */
export function dismissStickyToast(id) {
  if (!id) return;
  const el = $(`#toasts [data-id="${CSS.escape(String(id))}"][data-sticky="true"]`);
  if (el) removeToast(el);
}

export function clearToasts() {
  $('#toasts').replaceChildren();
}

function autoHide(el, duration) {
  let remaining = duration;
  let started = Date.now();
  let timer = setTimeout(() => removeToast(el), remaining);
  const pause = () => {
    if (!timer) return;
    clearTimeout(timer);
    timer = 0;
    remaining -= Date.now() - started;
  };
  const resume = () => {
    if (timer || el.matches(':hover, :focus-within')) return;
    started = Date.now();
    timer = setTimeout(() => removeToast(el), Math.max(remaining, 1000));
  };
  el.addEventListener('mouseenter', pause);
  el.addEventListener('focusin', pause);
  el.addEventListener('mouseleave', resume);
  el.addEventListener('focusout', resume);
}

function removeToast(el, immediate = false) {
  if (!el) return;
  if (immediate || matchMedia('(prefers-reduced-motion: reduce)').matches) {
    el.remove();
    return;
  }
  if (el.dataset.leaving) return;
  el.dataset.leaving = 'true';
  el.classList.add('toast--leaving');
  // animationend may never come (a hidden tab does not animate).
  setTimeout(() => el.remove(), 200);
}
