// What the expense and invoice views share: a form's fields as a POST body,
// the create request with the server's field errors shown beside the fields
// (the way the earnings form shows them), and a row's two-click Delete.

import { busy, clearErrors, confirmClick, h, numberOrNull, showErrors } from './dom.js';

/**
 * The named fields as a POST body. Fields left empty are not sent: the
 * server then names the required ones in its field errors, and the
 * optional ones (platform, notes) are simply absent.
 */
export function formBody(form, names, { numbers = ['amount'] } = {}) {
  const data = new FormData(form);
  const body = {};
  for (const name of names) {
    const raw = String(data.get(name) ?? '').trim();
    if (raw === '') continue;
    body[name] = numbers.includes(name) ? numberOrNull(raw) : raw;
  }
  return body;
}

/**
 * POSTs the form's body, one request at a time (busy() disables the form),
 * and hands the server's answer to `created`; a refusal is shown on the form.
 */
export function submitCreate(form, create, created) {
  return busy(form, async () => {
    try {
      const record = await create();
      clearErrors(form);
      created(record);
    } catch (err) {
      showErrors(form, err);
    }
  });
}

/**
 * A row's Delete: a first click asks for a second one, which deletes. The
 * row goes as soon as the server agrees (or answers 404: another tab was
 * first), without waiting for the `{kind}:deleted` event, which then changes
 * nothing.
 */
export function deleteButton({ testid, remove, removed, failed }) {
  const button = h('button', { type: 'button', class: 'button button--ghost button--small button--danger', 'data-testid': testid }, 'Delete');
  button.addEventListener('click', async () => {
    if (!confirmClick(button, 'Delete')) return;
    button.disabled = true;
    try {
      await remove();
      removed();
    } catch (err) {
      if (err.status === 404) removed();
      else failed(err);
      if (button.isConnected) button.disabled = false;
    }
  });
  return button;
}
