// The dashboard in a real browser: starts `ovasabi up` on a free port with a data directory
// of its own, opens the page in Debian's headless Chromium (driven by playwright-core), and
// checks, as a person would see them: an order's events in the live stream within a second
// of the request's answer, the event's detail (CloudEvent, schema, causal tree), the
// analytics moving, a poisoned event in the dead letters and gone after clicking Redrive,
// the topology, throughput, schemas and webhooks views, both themes, a narrow window, and
// the page reconnecting by itself when the server restarts. Saves a screenshot of each view.
//
//   node dashboard.test.mjs --bin target/debug/ovasabi --out target/dashboard-screenshots
//
// Options: --chromium PATH (default /usr/bin/chromium), --headed. Exits 0 when every check
// passed, 1 with the failed check otherwise.

import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdirSync, mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const args = parseArgs(process.argv.slice(2));
const bin = resolve(args.bin ?? 'target/debug/ovasabi');
const out = resolve(args.out ?? 'target/dashboard-screenshots');
const browserPath = args.chromium ?? '/usr/bin/chromium';
for (const [what, path] of [['the ovasabi binary (--bin)', bin], ['Chromium (--chromium)', browserPath]]) {
  if (!existsSync(path)) fail(`${what} is not at ${path}`);
}
mkdirSync(out, { recursive: true });

const dataDir = mkdtempSync(join(tmpdir(), 'ovasabi-dashboard-'));
const env = { ...process.env, OVASABI_DATA_DIR: dataDir, OVASABI_LOG: 'warn' };
delete env.OVASABI_DASHBOARD_DIR;
const run = Math.random().toString(36).slice(2, 8);
const browserErrors = [];
let up;
let browser;
let expectingOutage = false;

function parseArgs(argv) {
  const parsed = {};
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].replace(/^--/, '');
    if (name === 'headed') parsed.headed = true;
    else parsed[name] = argv[++i];
  }
  return parsed;
}

function fail(message) {
  console.error(`dashboard test FAILED: ${message}`);
  process.exitCode = 1;
  throw new Error(message);
}

function step(message) {
  console.log(`- ${message}`);
}

/** Starts `ovasabi up` on `http` (an address, or 127.0.0.1:0); resolves to its base URL once ready. */
function startUp(http) {
  return new Promise((resolveUp, rejectUp) => {
    const child = spawn(bin, ['up', '--http', http, '--webhooks-allow', '127.0.0.1/32', '--webhooks-allow-http'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let base = null;
    let log = '';
    const timer = setTimeout(() => rejectUp(new Error(`ovasabi up was not ready within 60 s:\n${log}`)), 60_000);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      log += chunk;
      const listening = log.match(/listening on (http:\/\/\S+)/);
      if (listening) base = listening[1];
      if (base && /^ready:/m.test(log)) {
        clearTimeout(timer);
        resolveUp(base);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (!base) rejectUp(new Error(`ovasabi up exited (${code}) before it was ready:\n${log}`));
    });
    child.stdout.resume();
    up = child;
  });
}

/** SIGTERM; fails unless `ovasabi up` exits 0 within 30 s. */
async function stopUp() {
  if (!up || up.exitCode !== null) return;
  const exited = new Promise((done) => up.once('exit', (code, signal) => done({ code, signal })));
  const timer = setTimeout(() => up.kill('SIGKILL'), 30_000);
  up.kill('SIGTERM');
  const { code, signal } = await exited;
  clearTimeout(timer);
  if (code !== 0) fail(`ovasabi up did not stop cleanly on SIGTERM (exit ${code}, signal ${signal})`);
}

async function api(base, method, path, body, headers = {}) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  if (!response.ok) fail(`${method} ${path} answered ${response.status}: ${text}`);
  return json;
}

async function until(what, timeoutMs, check) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) fail(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function show(page, view) {
  await page.click(`a[data-view="${view}"]`);
  await page.waitForSelector(`[data-testid="view-${view}"]`, { state: 'visible', timeout: 5000 });
}

async function shot(page, name) {
  const path = join(out, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`  screenshot ${path}`);
}

function order(customer, amountMinor) {
  return {
    customer_id: customer,
    items: [{ sku: 'MUG-1', quantity: 2, unit_price: { amount_minor: amountMinor, currency: 'EUR' } }],
    shipping_address: { recipient: 'Ada Lovelace', line1: '12 St James Sq', city: 'London', postal_code: 'SW1Y 4JH', country: 'GB' },
  };
}

async function main() {
  // A partner's endpoint, to see deliveries in the webhooks view.
  const receiver = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(204);
      res.end();
    });
  });
  await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
  const receiverUrl = `http://127.0.0.1:${receiver.address().port}/hooks`;

  step(`ovasabi up (${bin}), data in ${dataDir}`);
  const base = await startUp('127.0.0.1:0');
  const address = base.replace('http://', '');
  const partner = JSON.parse(
    execFileSync(bin, ['webhooks', 'partner', 'add', 'acme', '--permit', 'order.*,payment.*', '--format', 'json'], { env }).toString(),
  );
  await api(base, 'POST', '/v1/webhooks', { url: receiverUrl, filters: ['order.*'], description: 'Acme order feed' }, {
    authorization: `Bearer ${partner.api_key}`,
  });

  browser = await chromium.launch({
    executablePath: browserPath,
    headless: !args.headed,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 }, colorScheme: 'light' });
  const page = await context.newPage();
  page.on('pageerror', (e) => browserErrors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // While the server is down on purpose, the browser reports the refused connections.
    if (expectingOutage && /ERR_CONNECTION_REFUSED|Failed to load resource|EventSource/.test(m.text())) return;
    browserErrors.push(`console error: ${m.text()}`);
  });

  step('the page opens and its live stream connects');
  await page.goto(`${base}/`);
  await page.waitForSelector('[data-testid="connection"][data-state="live"]', { timeout: 10_000 });
  await show(page, 'stream');
  await shot(page, '01-stream-empty');

  step('analytics before the order');
  await show(page, 'analytics');
  const ordersBefore = Number(await page.getAttribute('[data-testid="metric-orders"]', 'data-value', { timeout: 10_000 }));

  step("an order placed over the API: its events in the live stream within a second");
  await show(page, 'stream');
  const correlation = `browser-${run}`;
  const user = await api(base, 'POST', '/v1/users', { email: `ada-${run}@example.com`, display_name: 'Ada' }, {
    'X-Correlation-Id': correlation,
    'Idempotency-Key': `user-${run}`,
  });
  const placed = await api(base, 'POST', '/v1/orders', order(user.id, 1250), {
    'X-Correlation-Id': correlation,
    'Idempotency-Key': `order-${run}`,
  });
  const answeredAt = Date.now();
  const row = `[data-testid="event-row"][data-type="order.placed"][data-subject="${placed.id}"]`;
  try {
    await page.waitForSelector(row, { timeout: 1000 });
  } catch {
    fail(`order.placed of ${placed.id} was not in the live stream within 1 s of the request's answer`);
  }
  console.log(`  order.placed shown ${Date.now() - answeredAt} ms after the request was answered`);
  await page.waitForSelector(`[data-testid="event-row"][data-type="user.registered"][data-correlation-id="${correlation}"]`, { timeout: 5000 });
  await page.waitForSelector(`[data-testid="event-row"][data-type="coin.mined"][data-correlation-id="${correlation}"]`, { timeout: 10_000 });
  await shot(page, '02-stream');

  step('filters: only the order events of this correlation');
  await page.fill('[data-testid="filter-type"]', 'order.*');
  await page.fill('[data-testid="filter-correlation"]', correlation);
  await page.press('[data-testid="filter-correlation"]', 'Enter');
  await until('the filtered stream', 10_000, async () => {
    const types = await page.$$eval('[data-testid="event-row"]', (rows) => rows.map((r) => r.dataset.type));
    return types.length > 0 && types.every((t) => t.startsWith('order.')) ? types : null;
  });
  await shot(page, '03-stream-filtered');

  step("the order's detail: CloudEvent, schema, causal tree");
  await page.click(row);
  await page.waitForSelector('[data-testid="event-detail"]', { state: 'visible', timeout: 5000 });
  const json = await page.textContent('[data-testid="event-json"]');
  if (!json.includes(placed.id) || !json.includes('"specversion"')) fail(`the detail's CloudEvent lacks the order: ${json.slice(0, 300)}`);
  await until('the schema in the detail', 10_000, async () => /order\.placed|"properties"/.test((await page.textContent('[data-testid="event-schema"]')) ?? ''));
  await until('the causal tree in the detail', 20_000, async () => (await page.$$('[data-testid="trace-node"]')).length >= 2);
  await shot(page, '04-event-detail');
  await page.keyboard.press('Escape');
  await page.fill('[data-testid="filter-type"]', '');
  await page.fill('[data-testid="filter-correlation"]', '');
  await page.press('[data-testid="filter-correlation"]', 'Enter');

  step('the analytics count the order');
  await show(page, 'analytics');
  await until('metric-orders above its value before the order', 15_000, async () => {
    const now = Number(await page.getAttribute('[data-testid="metric-orders"]', 'data-value'));
    return now > ordersBefore;
  });
  await shot(page, '05-analytics');

  step('a poisoned event: dead-lettered, shown, redriven with a click');
  const poisonOrder = `poison-${run}`;
  await api(base, 'POST', '/v1/events?topic=commerce.events', {
    type: 'payment.completed',
    subject: poisonOrder,
    data: { payment_id: `pay-${run}`, order_id: poisonOrder, amount: { amount_minor: 2500, currency: 'EUR' }, method: 'card', completed_at: new Date().toISOString() },
  });
  await show(page, 'consumers');
  const dead = '[data-testid="dead-letter"][data-type="payment.completed"]';
  // The wallet retries it 4 times, 1 + 2 + 4 + 8 s apart, before giving up.
  await page.waitForSelector(dead, { timeout: 60_000 });
  const deadId = await page.getAttribute(dead, 'data-id');
  await page.waitForTimeout(2500); // the groups' table catches up (it refreshes every 2 s)
  await shot(page, '06-consumers-dead-letter');
  // The cause, fixed: the order the payment was for.
  await api(base, 'POST', '/v1/events?topic=commerce.events', {
    type: 'order.placed',
    subject: poisonOrder,
    data: { order_id: poisonOrder, ...order(user.id, 1250), total: { amount_minor: 2500, currency: 'EUR' }, placed_at: new Date().toISOString() },
  });
  await page.click(`[data-testid="dead-letter"][data-id="${deadId}"] [data-testid="redrive"]`);
  await page.waitForSelector(`[data-testid="dead-letter"][data-id="${deadId}"]`, { state: 'detached', timeout: 10_000 });
  const letters = await api(base, 'GET', '/v1/dlq');
  const redriven = letters.items.find((i) => i.id === deadId);
  if (!redriven?.redriven_at) fail(`${deadId} is not recorded as re-driven: ${JSON.stringify(letters)}`);
  await page.waitForSelector('[data-testid="dead-letters-empty"]', { timeout: 10_000 });
  await page.waitForSelector('[data-testid="group-row"][data-group="wallet"]', { timeout: 5000 });
  await shot(page, '07-consumers-after-redrive');

  step('topology');
  await show(page, 'topology');
  for (const node of ['service:commerce', 'topic:commerce.events', 'group:wallet']) {
    await page.waitForSelector(`[data-testid="topology"] [data-node="${node}"]`, { timeout: 10_000 });
  }
  await shot(page, '08-topology');

  step('throughput and latency');
  await until('two sampled intervals', 20_000, async () => (await api(base, 'GET', '/v1/dashboard/series')).points.length >= 2);
  await show(page, 'throughput');
  await page.waitForSelector('[data-testid="chart-topics"]', { timeout: 10_000 });
  await page.waitForSelector('[data-testid="chart-latency"]', { timeout: 10_000 });
  await page.waitForTimeout(5500);
  await shot(page, '09-throughput');

  step('schemas');
  await show(page, 'schemas');
  await page.waitForSelector('[data-testid="schema-row"][data-type="order.placed"]', { timeout: 10_000 });
  await page.click('[data-testid="schema-row"][data-type="order.placed"]');
  await page.waitForTimeout(500);
  await shot(page, '10-schemas');

  step('webhooks: the endpoint and its deliveries');
  await until('a delivery to the partner endpoint', 20_000, async () => {
    const hooks = await api(base, 'GET', '/v1/dashboard/webhooks');
    return hooks.items.some((e) => e.recent_attempts.some((a) => a.status_code === 204));
  });
  await show(page, 'webhooks');
  await page.waitForSelector('[data-testid="webhook-row"]', { timeout: 10_000 });
  await page.waitForTimeout(500);
  await shot(page, '11-webhooks');

  step('the other theme');
  const theme = await page.evaluate(() => document.documentElement.dataset.theme);
  await page.click('[data-testid="theme-toggle"]');
  const toggled = await page.evaluate(() => document.documentElement.dataset.theme);
  if (!theme || theme === toggled) fail(`the theme toggle did not change the theme (${theme} → ${toggled})`);
  await show(page, 'stream');
  await page.waitForTimeout(300);
  await shot(page, '12-stream-dark');
  await show(page, 'consumers');
  await page.waitForTimeout(300);
  await shot(page, '13-consumers-dark');

  step('a narrow window');
  await page.setViewportSize({ width: 400, height: 800 });
  await show(page, 'stream');
  await page.waitForTimeout(300);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 1) fail(`at 400 px the page is ${overflow} px wider than the window`);
  await shot(page, '14-stream-narrow');
  await page.setViewportSize({ width: 1366, height: 900 });

  step('the server restarts: the page reconnects by itself');
  expectingOutage = true;
  await stopUp();
  await page.waitForSelector('[data-testid="connection"][data-state="reconnecting"]', { timeout: 10_000 });
  await shot(page, '15-reconnecting');
  await startUp(address);
  await page.waitForSelector('[data-testid="connection"][data-state="live"]', { timeout: 30_000 });
  expectingOutage = false;
  const again = await api(base, 'POST', '/v1/orders', order(user.id, 990), { 'Idempotency-Key': `order-again-${run}` });
  await page.waitForSelector(`[data-testid="event-row"][data-type="order.placed"][data-subject="${again.id}"]`, { timeout: 5000 });
  await shot(page, '16-after-restart');

  if (browserErrors.length) fail(`the browser reported errors:\n${browserErrors.join('\n')}`);
  receiver.close();
  console.log(`dashboard test passed; screenshots in ${out}`);
}

try {
  await main();
} catch (e) {
  if (!process.exitCode) {
    console.error(`dashboard test FAILED: ${e.stack ?? e}`);
    process.exitCode = 1;
  }
} finally {
  if (browser) await browser.close().catch(() => {});
  expectingOutage = true;
  if (up && up.exitCode === null) {
    up.kill('SIGTERM');
    await new Promise((r) => up.once('exit', r));
  }
  rmSync(dataDir, { recursive: true, force: true });
  process.exit(process.exitCode ?? 0);
}
