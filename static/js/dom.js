// Tiny DOM helpers. Everything from the server goes in as text nodes or
// attributes, never as HTML, so a platform called `<img onerror=…>` is just
// a funny name.

const PROPS = new Set(['value', 'checked', 'selected', 'textContent', 'htmlFor']);

/** h('button', {class: 'x', onclick: fn, 'data-testid': 'y', style: {'--c': '#fff'}}, 'text', childNode) */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value == null || value === false) continue;
    if (key === 'class') el.className = value;
    // Through the CSSOM, which the Content-Security-Policy allows (a
    // `style` attribute would be inline style, which it blocks).
    else if (key === 'style') for (const [prop, v] of Object.entries(value)) el.style.setProperty(prop, v);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (PROPS.has(key)) el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

/** A colour from the server as CSS, or a neutral grey when it is not a hex colour. */
export const safeColor = (c) => (/^#[0-9a-f]{3,8}$/i.test(String(c)) ? c : '#8884');

/** The coloured dot before a platform's name. */
export const colorDot = (color) => h('span', { class: 'dot', style: { '--c': safeColor(color) }, 'aria-hidden': 'true' });

/** A number input's value as the API wants it: '' is "not given". */
export const numberOrNull = (v) => (String(v).trim() === '' ? null : Number(v));

/** Removes a form's previous error messages. */
export function clearErrors(form) {
  for (const el of $$('.field-error', form)) el.textContent = '';
  for (const el of $$('[aria-invalid]', form)) el.removeAttribute('aria-invalid');
  const general = $('[data-role="form-error"]', form);
  if (general) {
    general.textContent = '';
    general.hidden = true;
  }
}

/**
 * Shows an API error on a form: each `fields` entry next to its field
 * (a `[data-field=name]` wrapper), the message and any field we have no
 * place for in the form's general error line.
 */
export function showErrors(form, err) {
  clearErrors(form);
  const leftovers = [];
  let firstInvalid = null;
  for (const [name, reason] of Object.entries(err?.fields ?? {})) {
    const wrapper = $(`[data-field="${CSS.escape(name)}"]`, form);
    const slot = wrapper && $('.field-error', wrapper);
    if (!slot) {
      leftovers.push(`${name}: ${reason}`);
      continue;
    }
    slot.textContent = String(reason);
    const input = $('input, select, textarea', wrapper);
    if (input) {
      input.setAttribute('aria-invalid', 'true');
      firstInvalid ??= input;
    }
  }
  const general = $('[data-role="form-error"]', form);
  if (general) {
    general.textContent = [err?.message ?? 'Something went wrong.', ...leftovers].join(' — ');
    general.hidden = false;
  }
  firstInvalid?.focus();
}

/** Disables a form's buttons while `work` runs, so a double click sends one request. */
export async function busy(form, work) {
  const buttons = $$('button', form);
  for (const b of buttons) b.disabled = true;
  form.setAttribute('aria-busy', 'true');
  try {
    return await work();
  } finally {
    for (const b of buttons) b.disabled = false;
    form.removeAttribute('aria-busy');
  }
}

// How long a Delete button waits for its second, confirming click.
const CONFIRM_MS = 4000;

/**
 * The first click on a Delete (or Void) button: it asks for a second one,
 * for a while. Two clicks instead of a blocking confirm(): the page keeps
 * updating meanwhile. Returns true when this click is the confirming one.
 */
export function confirmClick(button, label = button.textContent) {
  if (button.dataset.confirm === 'true') return true;
  button.dataset.confirm = 'true';
  button.textContent = 'Confirm';
  setTimeout(() => {
    if (button.isConnected && button.dataset.confirm === 'true') {
      button.dataset.confirm = 'false';
      button.textContent = label;
    }
  }, CONFIRM_MS);
  return false;
}
