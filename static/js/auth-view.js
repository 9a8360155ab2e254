// The log-in / create-account form.

import * as api from './api.js';
import { $, busy, clearErrors, showErrors } from './dom.js';

/** @param onSignedIn ({token, user}) after a successful login or registration. */
export function initAuthView({ onSignedIn }) {
  const form = $('#auth-form');
  const loginTab = $('#auth-mode-login');
  const registerTab = $('#auth-mode-register');
  const submit = $('#auth-submit');
  const password = $('#auth-password');
  let mode = 'login';

  const setMode = (next) => {
    mode = next;
    loginTab.setAttribute('aria-pressed', String(mode === 'login'));
    registerTab.setAttribute('aria-pressed', String(mode === 'register'));
    $('#auth-name-field').hidden = mode !== 'register';
    $('#auth-password-hint').hidden = mode !== 'register';
    submit.textContent = mode === 'login' ? 'Log in' : 'Create account';
    // Lets password managers offer a new password rather than a saved one.
    password.autocomplete = mode === 'login' ? 'current-password' : 'new-password';
    clearErrors(form);
  };
  loginTab.addEventListener('click', () => setMode('login'));
  registerTab.addEventListener('click', () => setMode('register'));

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const email = $('#auth-email').value.trim();
    const pass = password.value;
    const name = $('#auth-name').value.trim();
    await busy(form, async () => {
      try {
        const result = mode === 'login' ? await api.auth.login(email, pass) : await api.auth.register(email, pass, name || undefined);
        password.value = '';
        clearErrors(form);
        onSignedIn(result);
      } catch (err) {
        showErrors(form, err);
      }
    });
  });

  return {
    /** Shows the form, with a reason when the session ended by itself. */
    reset(message) {
      clearErrors(form);
      if (message) showErrors(form, { message });
      $('#auth-email').focus();
    },
  };
}
