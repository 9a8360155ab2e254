// End-to-end: the web client in Debian's Chromium against the real server.
//
// Two tabs of one browser share a cookie session and (through the leader
// tab) one stream; what one tab does must show in the other without a
// reload, and both must survive a restart of the server.
//
//   cargo build && node --test tests/e2e/
//
// EARNTRACK_BIN overrides the server binary (relative to the repo root),
// CHROMIUM_PATH the browser, E2E_KEEP=1 keeps the temporary folder.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const BIN = path.resolve(REPO, process.env.EARNTRACK_BIN ?? 'target/debug/earntrack');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SCREENSHOT = path.join(REPO, 'docs', 'screenshot.png');

const EMAIL = `e2e-${Date.now().toString(36)}@example.com`;
const PASSWORD = 'correct horse battery';

// ---- helpers --------------------------------------------------------------

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Retries `check` until it stops throwing; then returns its value. */
async function eventually(check, { timeout = 15_000, interval = 200, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let lastError;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (err?.fatal) throw err;
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const e = new Error(`timed out after ${timeout} ms waiting for ${what}: ${lastError?.message ?? lastError}`);
      e.cause = lastError;
      throw e;
    }
    await sleep(interval);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** The server binary as a child process, with its output kept in a log file. */
class Server {
  constructor({ port, dir }) {
    this.port = port;
    this.base = `http://127.0.0.1:${port}`;
    this.dbUrl = `sqlite://${path.join(dir, 'e2e.db')}`;
    this.logFile = path.join(dir, 'server.log');
    this.child = null;
    this.starts = 0;
  }

  async start() {
    this.starts += 1;
    appendFileSync(this.logFile, `\n===== start #${this.starts} =====\n`);
    const child = spawn(BIN, [], {
      cwd: path.dirname(this.logFile),
      env: {
        ...process.env,
        EARNTRACK_ADDR: `127.0.0.1:${this.port}`,
        DATABASE_URL: this.dbUrl,
        JWT_SECRET: 'e2e-secret-0123456789abcdefghijklmnop',
        RUST_LOG: process.env.RUST_LOG ?? 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    this.exit = once(child, 'exit');
    child.stdout.on('data', (d) => appendFileSync(this.logFile, d));
    child.stderr.on('data', (d) => appendFileSync(this.logFile, d));
    child.on('error', (err) => appendFileSync(this.logFile, `spawn error: ${err.message}\n`));
    await eventually(
      async () => {
        if (child.exitCode !== null || child.signalCode !== null) {
          throw Object.assign(new Error(`the server exited (${child.exitCode ?? child.signalCode}) while starting`), { fatal: true });
        }
        const res = await fetch(`${this.base}/readyz`);
        assert.equal(res.status, 200, `/readyz answered ${res.status}`);
      },
      { timeout: 30_000, what: 'GET /readyz == 200' },
    );
  }

  /** SIGTERM, then the exit status: the contract wants exit 0 within 10 s. */
  async stop() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return null;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    const [code, signal] = await this.exit;
    clearTimeout(timer);
    this.child = null;
    return { code, signal };
  }

  /** `earntrack admin grant <email>` on this server's database. */
  grantAdmin(email) {
    return new Promise((resolve, reject) => {
      execFile(BIN, ['admin', 'grant', email], { env: { ...process.env, DATABASE_URL: this.dbUrl } }, (err, stdout, stderr) =>
        err ? reject(new Error(`admin grant failed: ${err.message} ${stderr}`)) : resolve(stdout),
      );
    });
  }

  tail(lines = 40) {
    try {
      return readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no server log)';
    }
  }
}

// ---- fixture ------------------------------------------------------------------

let dir;
let server;
let browser;
let context;
let pageA;
let pageB;
let failed = null;
const pageLog = [];
const streamEncodings = [];

before(async () => {
  assert.ok(existsSync(BIN), `server binary not found at ${BIN}: run cargo build first (or set EARNTRACK_BIN)`);
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM_PATH)`);
  dir = mkdtempSync(path.join(os.tmpdir(), 'earntrack-e2e-'));
  server = new Server({ port: await freePort(), dir });
  await server.start();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 800 }, baseURL: server.base });
  context.setDefaultTimeout(15_000);
  // Chromium asks for gzip: the stream's Content-Encoding, per response.
  context.on('response', (res) => {
    if (new URL(res.url()).pathname === '/events') {
      streamEncodings.push(res.headers()['content-encoding'] ?? 'identity');
    }
  });
});

after(async () => {
  await browser?.close().catch(() => {});
  const stopped = await server?.stop().catch(() => null);
  if (failed) {
    console.error(`\n--- server log (tail) ---\n${server?.tail(80)}`);
    console.error(`\n--- page log (tail) ---\n${pageLog.slice(-60).join('\n')}`);
  }
  if (dir && !process.env.E2E_KEEP && !failed) rmSync(dir, { recursive: true, force: true });
  else if (dir) console.error(`kept ${dir}`);
  void stopped;
});

function watch(page, name) {
  page.on('console', (msg) => pageLog.push(`[${name}] console.${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => pageLog.push(`[${name}] UNCAUGHT: ${err.stack ?? err.message}`));
  return page;
}

/** A test of the scenario; after a failure the rest are skipped, since each builds on the last. */
function step(name, fn, timeout = 90_000) {
  test(name, { timeout }, async (t) => {
    if (failed) {
      t.skip(`an earlier step failed: ${failed}`);
      return;
    }
    try {
      await fn(t);
    } catch (err) {
      failed = name;
      throw err;
    }
  });
}

/** The ISO 8601 week of a local day, `2026-W49`: the key the weekly table's rows carry. */
function isoWeekKey(day) {
  const date = new Date(Date.UTC(day.getFullYear(), day.getMonth(), day.getDate()));
  const weekday = date.getUTCDay() || 7;
  date.setUTCDate(date.getUTCDate() + 4 - weekday);
  const year = date.getUTCFullYear();
  const week = Math.ceil(((date - Date.UTC(year, 0, 1)) / 86_400_000 + 1) / 7);
  return `${year}-W${String(week).padStart(2, '0')}`;
}

const connState = (page) => page.getByTestId('conn-state');
const unreadCount = async (page) => Number((await page.getByTestId('unread-count').textContent()).trim());

async function expectText(locator, expected, { timeout = 15_000, what } = {}) {
  await eventually(
    async () => {
      const text = (await locator.textContent({ timeout: 1000 }))?.trim();
      if (expected instanceof RegExp) assert.match(text ?? '', expected);
      else assert.equal(text, expected);
    },
    { timeout, what: what ?? `text ${expected}` },
  );
}

/**
 * Presses a button from the keyboard, as a keyboard user would: the toasts
 * stacked in the corner may cover it from the pointer.
 */
async function activate(locator) {
  await locator.press('Enter');
}

function uncaught() {
  return pageLog.filter((l) => l.includes('UNCAUGHT'));
}

// ---- the scenario -----------------------------------------------------------

let platformId;
let firstEarningId;
let unreadBefore;

step('a new user registers in page A and goes live', async () => {
  pageA = watch(await context.newPage(), 'A');
  await pageA.goto('/');
  await pageA.getByTestId('auth-view').waitFor({ state: 'visible' });
  await pageA.getByTestId('auth-mode-register').click();
  await pageA.getByTestId('auth-name').fill('Erin Tester');
  await pageA.getByTestId('auth-email').fill(EMAIL);
  await pageA.getByTestId('auth-password').fill(PASSWORD);
  await pageA.getByTestId('auth-submit').click();
  await pageA.getByTestId('app-view').waitFor({ state: 'visible' });
  await expectText(pageA.getByTestId('user-name'), 'Erin Tester');
  await expectText(connState(pageA), 'live', { what: 'page A live' });
  // Every later step's events then travel over a gzip stream.
  assert.deepEqual([...new Set(streamEncodings)], ['gzip'], 'Chromium streams are gzip');
  // The test user may open the operator view, which also lets the test count
  // the user's open streams. Registration never makes an admin: the
  // operator's command does, and the open stream then ends with
  // auth:expired; the page refreshes its token and goes live again.
  await server.grantAdmin(EMAIL);
  await sleep(1500);
  await expectText(connState(pageA), 'live', { what: 'page A live after the grant' });
});

step('page B in the same browser shares the session and the one stream', async () => {
  pageB = watch(await context.newPage(), 'B');
  await pageB.goto('/');
  // The cookie session is found by POST /api/auth/refresh on load.
  await pageB.getByTestId('app-view').waitFor({ state: 'visible' });
  await expectText(connState(pageB), 'live', { what: 'page B live' });
  // One stream for the whole browser: page B follows page A's.
  await eventually(
    async () => {
      const conns = await pageA.evaluate(async () => {
        const res = await fetch('/api/admin/connections');
        return { status: res.status, body: await res.json() };
      });
      assert.equal(conns.status, 200, JSON.stringify(conns.body));
      assert.ok(Array.isArray(conns.body.users), 'users is a list');
      const total = conns.body.users.reduce((n, u) => n + u.connections, 0);
      assert.equal(total, 1, `open streams of this browser: ${JSON.stringify(conns.body)}`);
    },
    { timeout: 10_000, what: 'exactly one open stream for two tabs' },
  );
  // Marks the document: if page B reloaded, the mark would be gone.
  await pageB.evaluate(() => {
    window.__noReload = true;
  });
});

step('a platform and an earning added in page A appear in page B without reload', async () => {
  await pageA.getByTestId('platform-name').fill('Upwork');
  await pageA.getByTestId('platform-submit').click();
  await pageA.getByTestId('platform-item').filter({ hasText: 'Upwork' }).waitFor();
  await pageB.getByTestId('platform-item').filter({ hasText: 'Upwork' }).waitFor();
  platformId = await pageA.getByTestId('platform-item').filter({ hasText: 'Upwork' }).getAttribute('data-id');
  assert.ok(platformId, 'the platform item carries its id');

  await pageA.getByTestId('earning-platform').selectOption({ label: 'Upwork' });
  await pageA.getByTestId('earning-hours').fill('4');
  await pageA.getByTestId('earning-amount').fill('100');
  await pageA.getByTestId('earning-notes').fill('first client');
  await pageA.getByTestId('earning-submit').click();

  const rowA = pageA.getByTestId('earning-row');
  await eventually(async () => assert.equal(await rowA.count(), 1), { what: 'one row in page A' });
  firstEarningId = await rowA.first().getAttribute('data-id');
  assert.ok(firstEarningId, 'the row carries the earning id');

  await pageB.locator(`[data-testid="earning-row"][data-id="${firstEarningId}"]`).waitFor({ timeout: 15_000 });
  await expectText(pageB.getByTestId('total-all'), '$100.00', { what: 'page B total' });
  await expectText(pageB.locator(`[data-testid="total-platform"][data-platform-id="${platformId}"] [data-testid="total-platform-amount"]`), '$100.00');
  assert.equal(await pageB.getByTestId('total-week').count(), 1, 'one ISO week total');
  assert.equal(await pageB.evaluate(() => window.__noReload === true), true, 'page B was not reloaded');
});

step('page A shows the "Earning Created" notification as a toast', async () => {
  const toast = pageA.getByTestId('toast').filter({ hasText: 'Earning Created' });
  await toast.first().waitFor({ state: 'visible', timeout: 15_000 });
  assert.match(await toast.first().textContent(), /\$100/);
});

step('marking the notification read in page A lowers the unread count in page B', async () => {
  unreadBefore = await eventually(
    async () => {
      const n = await unreadCount(pageB);
      assert.ok(n >= 1, `unread count in page B is ${n}`);
      return n;
    },
    { what: 'an unread notification in page B' },
  );
  await eventually(async () => assert.equal(await unreadCount(pageA), unreadBefore), { what: 'page A agrees on the unread count' });

  await pageA.getByTestId('bell').click();
  await pageA.getByTestId('notification-panel').waitFor({ state: 'visible' });
  const item = pageA.getByTestId('notification-item').filter({ hasText: 'Earning Created' }).and(pageA.locator('[data-unread="true"]'));
  await item.first().waitFor();
  await item.first().getByTestId('notification-mark-read').click();

  await eventually(async () => assert.equal(await unreadCount(pageA), unreadBefore - 1), { what: 'unread count drops in page A' });
  await eventually(async () => assert.equal(await unreadCount(pageB), unreadBefore - 1), { what: 'unread count drops in page B' });
  await pageA.keyboard.press('Escape');
});

step('an expense and an invoice marked paid in page A appear in page B without reload', async () => {
  const rowIn = (page, kind, id) => page.locator(`[data-testid="${kind}-row"][data-id="${id}"]`);
  // The earning and the expense are both dated today: one ISO week, netted.
  const thisWeek = (page) => page.locator(`[data-testid="ledger-week"][data-week="${isoWeekKey(new Date())}"]`);

  await pageA.getByTestId('expense-platform').selectOption({ label: 'Upwork' });
  await pageA.getByTestId('expense-amount').fill('30');
  await pageA.getByTestId('expense-category').fill('software');
  await pageA.getByTestId('expense-notes').fill('editor licence');
  await pageA.getByTestId('expense-submit').click();
  const expenseA = pageA.getByTestId('expense-row');
  await eventually(async () => assert.equal(await expenseA.count(), 1), { what: 'one expense in page A' });
  const expenseId = await expenseA.first().getAttribute('data-id');
  const expenseB = rowIn(pageB, 'expense', expenseId);
  await expenseB.waitFor({ timeout: 15_000 });
  await expectText(expenseB.getByTestId('expense-amount-cell'), '$30.00', { what: 'the expense amount in page B' });
  await expectText(expenseB.getByTestId('expense-category-cell'), 'software');
  await expectText(expenseB.getByTestId('expense-platform-cell'), 'Upwork', { what: 'the expense platform in page B' });
  await expectText(thisWeek(pageB).getByTestId('week-earned'), '$100.00', { what: 'earned this week in page B' });
  await expectText(thisWeek(pageB).getByTestId('week-spent'), '$30.00', { what: 'spent this week in page B' });
  await expectText(thisWeek(pageB).getByTestId('week-net'), '$70.00', { what: 'net this week in page B' });

  assert.equal(await pageA.getByTestId('invoice-number').inputValue(), 'INV-0001', 'the first number is prefilled');
  await pageA.getByTestId('invoice-client').fill('Acme');
  await pageA.getByTestId('invoice-amount').fill('1200');
  await pageA.getByTestId('invoice-submit').click();
  const invoiceA = pageA.getByTestId('invoice-row');
  await eventually(async () => assert.equal(await invoiceA.count(), 1), { what: 'one invoice in page A' });
  const invoiceId = await invoiceA.first().getAttribute('data-id');
  const invoiceB = rowIn(pageB, 'invoice', invoiceId);
  await expectText(invoiceB.getByTestId('invoice-status'), 'draft', { what: 'a draft in page B' });
  await expectText(invoiceB.getByTestId('invoice-number-cell'), 'INV-0001');
  // Both forms move on to the next number, page B's from the event.
  await eventually(async () => assert.equal(await pageA.getByTestId('invoice-number').inputValue(), 'INV-0002'), { what: 'INV-0002 next in page A' });
  await eventually(async () => assert.equal(await pageB.getByTestId('invoice-number').inputValue(), 'INV-0002'), { what: 'INV-0002 next in page B' });
  // A draft offers sent and void, never paid.
  assert.equal(await invoiceB.getByTestId('invoice-mark-paid').count(), 0, 'a draft cannot be marked paid');

  await activate(rowIn(pageA, 'invoice', invoiceId).getByTestId('invoice-mark-sent'));
  await expectText(invoiceB.getByTestId('invoice-status'), 'sent', { what: 'sent in page B' });
  const outstanding = pageB.getByTestId('week-outstanding').filter({ hasText: '$1,200.00' });
  await eventually(async () => assert.equal(await outstanding.count(), 1), { what: 'outstanding $1,200.00 in page B' });

  await activate(rowIn(pageA, 'invoice', invoiceId).getByTestId('invoice-mark-paid'));
  await expectText(invoiceB.getByTestId('invoice-status'), 'paid', { what: 'paid in page B' });
  const paidToast = pageB.getByTestId('toast').filter({ hasText: 'Invoice Paid' });
  await paidToast.first().waitFor({ state: 'visible', timeout: 15_000 });
  assert.match(await paidToast.first().textContent(), /INV-0001 paid: \$1,200\.00/);
  await eventually(async () => assert.equal(await outstanding.count(), 0), { what: 'nothing outstanding once paid' });
  assert.equal(await invoiceB.locator('[data-testid^="invoice-mark-"]').count(), 0, 'a paid invoice offers no further move');
  // The expense still counts as spent this week, in both pages.
  await expectText(thisWeek(pageA).getByTestId('week-spent'), '$30.00', { what: 'spent this week in page A' });
  await expectText(thisWeek(pageB).getByTestId('week-spent'), '$30.00', { what: 'spent this week in page B, still' });
  assert.equal(await pageB.evaluate(() => window.__noReload === true), true, 'page B was not reloaded');
});

step('an invoice voided and an expense deleted in page B go in page A too', async () => {
  await pageA.getByTestId('invoice-client').fill('Globex');
  await pageA.getByTestId('invoice-amount').fill('80');
  await pageA.getByTestId('invoice-submit').click();
  const second = pageB.getByTestId('invoice-row').filter({ has: pageB.getByTestId('invoice-number-cell').filter({ hasText: 'INV-0002' }) });
  await second.waitFor({ timeout: 15_000 });
  const secondId = await second.getAttribute('data-id');

  // Void is final: the first press asks for a confirming second one.
  const voidButton = second.getByTestId('invoice-mark-void');
  await activate(voidButton);
  await expectText(voidButton, 'Confirm');
  await activate(voidButton);
  const secondA = pageA.locator(`[data-testid="invoice-row"][data-id="${secondId}"]`);
  await expectText(secondA.getByTestId('invoice-status'), 'void', { what: 'void in page A' });
  assert.equal(await secondA.locator('[data-testid^="invoice-mark-"]').count(), 0, 'a void invoice offers no further move');

  const expenseB = pageB.getByTestId('expense-row').first();
  const expenseId = await expenseB.getAttribute('data-id');
  const del = expenseB.getByTestId('expense-delete');
  await activate(del);
  await activate(del);
  await pageA.locator(`[data-testid="expense-row"][data-id="${expenseId}"]`).waitFor({ state: 'detached', timeout: 15_000 });
  const thisWeekA = pageA.locator(`[data-testid="ledger-week"][data-week="${isoWeekKey(new Date())}"]`);
  await expectText(thisWeekA.getByTestId('week-spent'), '$0.00', { what: 'nothing spent this week in page A' });
  await expectText(thisWeekA.getByTestId('week-net'), '$100.00', { what: 'net back to earned in page A' });
  assert.equal(await pageA.getByTestId('expenses-empty').isVisible(), true, 'page A says there are no expenses');
  assert.equal(await pageB.evaluate(() => window.__noReload === true), true, 'page B was not reloaded');
});

step('after a server restart page B goes live again and catches up', async () => {
  // Record every state the badge shows, to see the outage was noticed.
  await pageB.evaluate(() => {
    const el = document.querySelector('[data-testid="conn-state"]');
    window.__states = [el.textContent];
    new MutationObserver(() => window.__states.push(el.textContent)).observe(el, { childList: true, characterData: true, subtree: true });
  });

  const stopped = await server.stop();
  assert.deepEqual(stopped, { code: 0, signal: null }, 'SIGTERM ends the server with exit status 0');
  await eventually(
    async () => {
      const states = await pageB.evaluate(() => window.__states);
      assert.ok(states.some((s) => s !== 'live'), `states seen: ${states}`);
    },
    { timeout: 15_000, what: 'page B noticing the outage' },
  );

  await server.start();
  // Created at once, most likely before the stream is back: page B must get
  // it by resuming from its last event id.
  const created = await eventually(
    async () => {
      const r = await pageA.evaluate(async ({ platformId }) => {
        const d = new Date();
        const date = `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
        const res = await fetch('/api/earnings', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ platformId, date, hours: 1.5, amount: 42.5, notes: 'after the restart' }),
        });
        return { status: res.status, body: await res.json().catch(() => null) };
      }, { platformId });
      assert.equal(r.status, 201, `POST /api/earnings answered ${r.status} ${JSON.stringify(r.body)}`);
      return r.body;
    },
    { timeout: 15_000, what: 'creating an earning after the restart' },
  );
  assert.ok(created?.id, 'the created earning has an id');

  await expectText(connState(pageB), 'live', { timeout: 45_000, what: 'page B live again' });
  await pageB.locator(`[data-testid="earning-row"][data-id="${created.id}"]`).waitFor({ timeout: 45_000 });
  await expectText(pageB.getByTestId('total-all'), '$142.50', { what: 'page B total after the restart' });
  await pageA.locator(`[data-testid="earning-row"][data-id="${created.id}"]`).waitFor({ timeout: 15_000 });
  await expectText(connState(pageA), 'live', { timeout: 45_000, what: 'page A live again' });
  assert.equal(await pageB.evaluate(() => window.__noReload === true), true, 'page B was not reloaded');
  assert.equal(await pageB.getByTestId('earning-row').count(), 2, 'no duplicate rows in page B');
});

step('no uncaught errors, and a screenshot of page A', async () => {
  assert.deepEqual(uncaught(), [], 'no uncaught exceptions in the pages');
  // The server's Content-Security-Policy blocked nothing the client needs.
  assert.deepEqual(pageLog.filter((l) => /Content Security Policy/i.test(l)), [], 'no CSP violations');
  mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await pageA.setViewportSize({ width: 1280, height: 800 });
  // A calm picture: no focus ring left from the bell, no half-played flash.
  await pageA.evaluate(() => {
    document.activeElement?.blur();
    window.scrollTo(0, 0);
  });
  await pageA.screenshot({ path: SCREENSHOT, animations: 'disabled' });
  assert.ok(existsSync(SCREENSHOT));
});
