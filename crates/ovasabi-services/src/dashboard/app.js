// The OVASABI live dashboard: one ES module, no build step, no dependencies.
//
// It reads only the public HTTP API (see docs/dashboard.md). Every string from the server is
// put into the page with textContent or an attribute, never parsed as HTML. Views poll while
// they are visible; the event stream stays open all the time (it drives the connection
// indicator in the header) and reopens itself, with backoff, when the server goes away.

'use strict';

const VIEWS = ['stream', 'topology', 'throughput', 'consumers', 'analytics', 'schemas', 'webhooks'];
const STREAM_CAP = 500;
const THEME_KEY = 'ovasabi.dashboard.theme';
const SVG_NS = 'http://www.w3.org/2000/svg';

// ---------------------------------------------------------------------------------------------
// DOM helpers

/** Creates an element. `props`: class, text, title, testid, data {…}, attrs {…}, on {…}. */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  applyProps(el, props);
  appendAll(el, children);
  return el;
}

/** Creates an SVG element; `attrs` are set as attributes, `text` as its text. */
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') el.textContent = String(v);
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
      else el.setAttribute(k, String(v));
    }
  }
  appendAll(el, children);
  return el;
}

function applyProps(el, props) {
  if (!props) return;
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    switch (k) {
      case 'class': el.className = v; break;
      case 'text': el.textContent = String(v); break;
      case 'testid': el.dataset.testid = v; break;
      case 'data': for (const [dk, dv] of Object.entries(v)) if (dv !== undefined && dv !== null) el.dataset[dk] = String(dv); break;
      case 'attrs': for (const [ak, av] of Object.entries(v)) if (av !== undefined && av !== null && av !== false) el.setAttribute(ak, av === true ? '' : String(av)); break;
      case 'on': for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn); break;
      default: el[k] = v;
    }
  }
}

function appendAll(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Text with `code` spans: "Run `x` now" → ["Run ", <code>x</code>, " now"]. */
function withCode(text) {
  return text.split('`').map((part, i) => (i % 2 ? h('code', { text: part }) : part));
}

function emptyState(text, testid) {
  return h('div', { class: 'empty', testid }, withCode(text));
}

/** An inline, dismissible-by-success message area. */
function noticeArea() {
  const el = h('div', { class: 'notice', attrs: { role: 'status', 'aria-live': 'polite' }, hidden: true });
  return {
    el,
    error(what, err) {
      el.hidden = false;
      el.className = 'notice error';
      el.textContent = `${what}: ${describe(err)}`;
    },
    info(text) {
      el.hidden = false;
      el.className = 'notice info';
      el.replaceChildren(...withCode(text));
    },
    clear() { el.hidden = true; el.textContent = ''; },
  };
}

function describe(err) {
  if (!err) return 'unknown error';
  if (err instanceof ApiError) return err.message;
  if (err.name === 'AbortError' || err.name === 'TimeoutError') return 'the server did not answer in time; retrying';
  return 'the server is unreachable; retrying';
}

function pretty(value) {
  try { return JSON.stringify(value, null, 2); } catch { return String(value); }
}

function jsonBlock(value, testid) {
  return h('pre', { class: 'json', testid, text: pretty(value) });
}

// ---------------------------------------------------------------------------------------------
// Formatting

const numberFmt = new Intl.NumberFormat(undefined);
const oneDecimal = new Intl.NumberFormat(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const twoSignificant = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
const compactFmt = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 });
const relativeFmt = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto', style: 'short' });
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const clockMsFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit', fractionalSecondDigits: 3 });
const shortTimeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
const moneyFmts = new Map();

const fmtInt = (n) => (Number.isFinite(Number(n)) ? numberFmt.format(Number(n)) : '—');
const fmtMs = (n) => (n === null || n === undefined || !Number.isFinite(Number(n)) ? '—' : `${oneDecimal.format(Number(n))} ms`);
const fmtRate = (n) => (Number.isFinite(Number(n)) ? `${twoSignificant.format(Number(n))}/s` : '—');

function fmtMoney(amountMinor, currency) {
  let fmt = moneyFmts.get(currency);
  if (fmt === undefined) {
    try { fmt = new Intl.NumberFormat(undefined, { style: 'currency', currency }); } catch { fmt = null; }
    moneyFmts.set(currency, fmt);
  }
  if (!fmt) return `${numberFmt.format(amountMinor / 100)} ${currency}`;
  const digits = fmt.resolvedOptions().maximumFractionDigits ?? 2;
  return fmt.format(Number(amountMinor) / 10 ** digits);
}

function minorToMajor(amountMinor, currency) {
  const fmt = moneyFmts.get(currency);
  const digits = fmt ? fmt.resolvedOptions().maximumFractionDigits ?? 2 : 2;
  return Number(amountMinor) / 10 ** digits;
}

function parseTime(iso) {
  if (!iso) return NaN;
  return Date.parse(iso);
}

function fmtClock(iso) {
  const t = parseTime(iso);
  return Number.isFinite(t) ? clockMsFmt.format(t) : '—';
}

function fmtFull(iso) {
  const t = parseTime(iso);
  return Number.isFinite(t) ? `${dateTimeFmt.format(t)} · ${iso}` : String(iso ?? '');
}

function fmtLocal(iso) {
  const t = parseTime(iso);
  return Number.isFinite(t) ? `${dateFmt.format(t)} ${clockMsFmt.format(t)}` : String(iso ?? '');
}

function fmtRelative(iso) {
  const t = parseTime(iso);
  if (!Number.isFinite(t)) return '—';
  const secs = Math.round((t - Date.now()) / 1000);
  const abs = Math.abs(secs);
  if (abs < 5) return 'just now';
  if (abs < 60) return relativeFmt.format(secs, 'second');
  if (abs < 3600) return relativeFmt.format(Math.round(secs / 60), 'minute');
  if (abs < 86400) return relativeFmt.format(Math.round(secs / 3600), 'hour');
  return relativeFmt.format(Math.round(secs / 86400), 'day');
}

/** A <time> showing a relative time, refreshed by the ticker below, with the full time as title. */
function relTime(iso) {
  return h('time', { class: 'rel', text: fmtRelative(iso), title: fmtFull(iso), attrs: { datetime: iso ?? '' }, data: { rel: iso ?? '' } });
}

setInterval(() => {
  for (const el of document.querySelectorAll('time[data-rel]')) {
    if (el.dataset.rel) el.textContent = fmtRelative(el.dataset.rel);
  }
}, 10_000);

// ---------------------------------------------------------------------------------------------
// HTTP

class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/** Fetches JSON from the API; throws ApiError for an error answer, TypeError when unreachable. */
async function api(path, { method = 'GET', body, timeout = 10_000 } = {}) {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeout);
  try {
    const headers = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: ctrl.signal, cache: 'no-store' });
    const text = await res.text();
    let json = null;
    if (text) {
      try { json = JSON.parse(text); } catch { json = null; }
    }
    if (!res.ok) {
      const e = json && json.error ? json.error : {};
      const msg = e.message ? (e.field ? `${e.field}: ${e.message}` : e.message) : `HTTP ${res.status} ${res.statusText}`.trim();
      throw new ApiError(res.status, e.code || String(res.status), msg, e.field);
    }
    if (json === null && text) throw new ApiError(res.status, 'bad_json', `${path} did not answer JSON`);
    return json;
  } finally {
    clearTimeout(timer);
  }
}

const enc = encodeURIComponent;

// ---------------------------------------------------------------------------------------------
// Live sources and pollers

/**
 * An EventSource that reopens itself: on an error it closes the old one and opens a new one
 * after 1 s, doubling up to 10 s, back to 1 s once a connection opens.
 */
class LiveSource {
  constructor(url, eventName, onData, onState) {
    this.url = url;
    this.eventName = eventName;
    this.onData = onData;
    this.onState = onState;
    this.es = null;
    this.timer = null;
    this.delay = 1000;
    this.state = 'closed';
  }

  open() {
    this.close();
    this.setState('connecting');
    const es = new EventSource(this.url);
    this.es = es;
    es.addEventListener('open', () => {
      if (this.es !== es) return;
      this.delay = 1000;
      this.setState('live');
    });
    es.addEventListener(this.eventName, (msg) => {
      if (this.es !== es) return;
      let data;
      try { data = JSON.parse(msg.data); } catch { return; }
      try { this.onData(data, msg); } catch (err) { reportBug(err); }
    });
    es.addEventListener('error', () => {
      if (this.es !== es) return;
      es.close();
      this.es = null;
      this.setState('reconnecting');
      const delay = this.delay;
      this.delay = Math.min(this.delay * 2, 10_000);
      this.timer = setTimeout(() => { this.timer = null; this.open(); }, delay);
    });
  }

  close() {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    if (this.es) { this.es.close(); this.es = null; }
    this.setState('closed');
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    if (this.onState) this.onState(state);
  }
}

/** Runs `task` now and then every `ms` while started; never two at once. */
class Poller {
  constructor(ms, task) {
    this.ms = ms;
    this.task = task;
    this.timer = null;
    this.running = false;
    this.generation = 0;
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.generation += 1;
    this.tick(this.generation);
  }

  stop() {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Runs the task now (e.g. after an action), keeping the schedule. */
  now() {
    if (!this.running) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.generation += 1;
    this.tick(this.generation);
  }

  async tick(gen) {
    try { await this.task(); } catch (err) { reportBug(err); }
    if (!this.running || gen !== this.generation) return;
    this.timer = setTimeout(() => this.tick(gen), this.ms);
  }
}

function reportBug(err) {
  // A bug in the page, not the server: keep the page running, leave a trace for developers.
  console.warn('dashboard:', err);
}

// ---------------------------------------------------------------------------------------------
// Theme

function storedTheme() {
  try { return localStorage.getItem(THEME_KEY); } catch { return null; }
}

function systemTheme() {
  return window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  const btn = document.querySelector('[data-testid="theme-toggle"]');
  if (btn) {
    const next = theme === 'dark' ? 'light' : 'dark';
    btn.setAttribute('aria-label', `Switch to the ${next} theme`);
    btn.title = `Switch to the ${next} theme`;
  }
  // Charts take their colours from CSS variables at draw time: redraw the visible view.
  if (current && views[current] && views[current].redraw) views[current].redraw();
}

function initTheme() {
  applyTheme(storedTheme() || systemTheme());
  const btn = document.querySelector('[data-testid="theme-toggle"]');
  btn.addEventListener('click', () => {
    const next = document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark';
    try { localStorage.setItem(THEME_KEY, next); } catch { /* private mode: not persisted */ }
    applyTheme(next);
  });
  if (window.matchMedia) {
    window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => {
      if (!storedTheme()) applyTheme(systemTheme());
    });
  }
}

const PALETTE_SIZE = 10;
function seriesColor(i) {
  return `var(--series-${i % PALETTE_SIZE})`;
}

// ---------------------------------------------------------------------------------------------
// Connection indicator (follows the event stream)

function setConnection(state) {
  const el = document.querySelector('[data-testid="connection"]');
  if (!el) return;
  const live = state === 'live';
  el.dataset.state = live ? 'live' : 'reconnecting';
  el.querySelector('.connection-label').textContent = live ? 'Live' : state === 'connecting' ? 'Connecting…' : 'Reconnecting…';
  el.title = live ? 'The event stream is open' : 'The event stream is closed; reopening it';
}

// ---------------------------------------------------------------------------------------------
// Charts (hand-drawn SVG)

function niceStep(range, count) {
  const raw = range / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10;
  return step * mag;
}

function niceScale(max, count = 4) {
  if (!(max > 0)) return { max: 1, ticks: [0, 0.5, 1] };
  const step = niceStep(max, count);
  const top = Math.ceil(max / step) * step;
  const ticks = [];
  for (let v = 0; v <= top + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
  return { max: top, ticks };
}

const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600].map((x) => x * 1000);

function timeTicks(t0, t1, count) {
  const span = Math.max(1, t1 - t0);
  const step = TIME_STEPS.find((st) => span / st <= count) ?? 3_600_000;
  const out = [];
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) out.push(t);
  return { ticks: out, step };
}

function clockLabel(t, step) {
  return step < 60_000 ? timeFmt.format(t) : shortTimeFmt.format(t);
}

/**
 * A multi-line time chart. `data`: {xs: [ms], series: [{name, color, values: [number|null], dash}]}.
 * Draws into `host` at its current width; a legend toggles series; hovering shows values.
 */
function lineChart(host, data, { height = 240, yFormat = fmtInt, tipFormat = yFormat, yLabel = '', hidden = new Set(), onToggle } = {}) {
  const width = Math.max(280, host.clientWidth || 720);
  const m = { l: 58, r: 14, t: 14, b: 26 };
  const iw = width - m.l - m.r;
  const ih = height - m.t - m.b;
  const { xs, series } = data;
  const visible = series.filter((sr) => !hidden.has(sr.name));
  let maxY = 0;
  for (const sr of visible) for (const v of sr.values) if (v !== null && v > maxY) maxY = v;
  const scale = niceScale(maxY);
  const t0 = xs[0];
  const t1 = xs.length > 1 ? xs[xs.length - 1] : xs[0] + 1000;
  const x = (t) => m.l + ((t - t0) / Math.max(1, t1 - t0)) * iw;
  const y = (v) => m.t + ih - (v / scale.max) * ih;

  const svgEl = s('svg', { class: 'chart', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': yLabel });
  const grid = s('g', { class: 'grid' });
  for (const tv of scale.ticks) {
    grid.append(
      s('line', { x1: m.l, x2: width - m.r, y1: y(tv), y2: y(tv) }),
      s('text', { x: m.l - 6, y: y(tv) + 4, 'text-anchor': 'end', class: 'tick', text: yFormat(tv) }),
    );
  }
  const tt = timeTicks(t0, t1, Math.max(2, Math.floor(iw / 90)));
  for (const t of tt.ticks) {
    grid.append(
      s('line', { x1: x(t), x2: x(t), y1: m.t + ih, y2: m.t + ih + 4, class: 'xtick' }),
      s('text', { x: x(t) > width - m.r - 30 ? width - m.r : x(t), y: height - 6, 'text-anchor': x(t) > width - m.r - 30 ? 'end' : 'middle', class: 'tick', text: clockLabel(t, tt.step) }),
    );
  }
  grid.append(s('line', { x1: m.l, x2: m.l + iw, y1: m.t + ih, y2: m.t + ih, class: 'axis' }));
  grid.append(s('line', { x1: m.l, x2: m.l, y1: m.t, y2: m.t + ih, class: 'axis' }));
  if (yLabel) grid.append(s('text', { x: 12, y: m.t + ih / 2, class: 'axis-label', transform: `rotate(-90 12 ${m.t + ih / 2})`, 'text-anchor': 'middle', text: yLabel }));
  svgEl.append(grid);

  for (const sr of visible) {
    let d = '';
    let pen = false;
    sr.values.forEach((v, i) => {
      if (v === null || v === undefined) { pen = false; return; }
      d += `${pen ? 'L' : 'M'}${x(xs[i]).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
    if (d) {
      svgEl.append(s('path', { d, class: 'line', stroke: sr.color, 'stroke-dasharray': sr.dash ? '5 4' : null },
        s('title', { text: sr.name })));
    }
    // Lone points (between gaps) would not show as a line.
    sr.values.forEach((v, i) => {
      const prev = sr.values[i - 1];
      const next = sr.values[i + 1];
      if (v !== null && v !== undefined && (prev === null || prev === undefined) && (next === null || next === undefined)) {
        svgEl.append(s('circle', { cx: x(xs[i]), cy: y(v), r: 2.5, fill: sr.color }));
      }
    });
  }

  // Hover: a guide line and a tooltip with every visible series at the nearest point.
  const guide = s('line', { class: 'guide', y1: m.t, y2: m.t + ih, x1: m.l, x2: m.l, visibility: 'hidden' });
  const overlay = s('rect', { x: m.l, y: m.t, width: iw, height: ih, class: 'overlay' });
  svgEl.append(guide, overlay);
  const tip = h('div', { class: 'tooltip', hidden: true });
  overlay.addEventListener('mousemove', (ev) => {
    const rect = svgEl.getBoundingClientRect();
    const px = ev.clientX - rect.left;
    let best = 0;
    for (let i = 1; i < xs.length; i++) if (Math.abs(x(xs[i]) - px) < Math.abs(x(xs[best]) - px)) best = i;
    guide.setAttribute('x1', x(xs[best]));
    guide.setAttribute('x2', x(xs[best]));
    guide.setAttribute('visibility', 'visible');
    tip.replaceChildren(h('div', { class: 'tip-time', text: timeFmt.format(xs[best]) }),
      ...visible.map((sr) => h('div', { class: 'tip-row' },
        h('span', { class: 'swatch', attrs: { style: `background:${sr.color}` } }),
        h('span', { class: 'tip-name', text: sr.name }),
        h('span', { class: 'tip-value', text: sr.values[best] === null || sr.values[best] === undefined ? '—' : tipFormat(sr.values[best]) }))));
    tip.hidden = false;
    const left = Math.min(px + 14, width - 220);
    tip.style.left = `${Math.max(0, left)}px`;
    tip.style.top = `${m.t}px`;
  });
  overlay.addEventListener('mouseleave', () => { tip.hidden = true; guide.setAttribute('visibility', 'hidden'); });

  const legend = h('ul', { class: 'legend' }, series.map((sr) => h('li', null,
    h('button', {
      type: 'button',
      class: hidden.has(sr.name) ? 'off' : '',
      attrs: { 'aria-pressed': hidden.has(sr.name) ? 'false' : 'true', title: 'Show or hide' },
      on: { click: () => onToggle && onToggle(sr.name) },
    }, h('span', { class: `swatch${sr.dash ? ' dashed' : ''}`, attrs: { style: `--c:${sr.color}` } }), sr.name))));

  host.replaceChildren(h('div', { class: 'chart-wrap' }, svgEl, tip), legend);
}

/** Bars over time: `xs` ms, `values` numbers. */
function barChart(host, xs, values, { height = 140, yFormat = fmtInt, color = 'var(--series-0)', step = 60_000, label = '' } = {}) {
  const width = Math.max(240, host.clientWidth || 360);
  const m = { l: 46, r: 8, t: 10, b: 22 };
  const iw = width - m.l - m.r;
  const ih = height - m.t - m.b;
  const maxY = Math.max(0, ...values);
  const scale = niceScale(maxY, 3);
  const n = Math.max(1, xs.length);
  const bw = iw / n;
  const y = (v) => m.t + ih - (v / scale.max) * ih;
  const svgEl = s('svg', { class: 'chart bars', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label });
  const grid = s('g', { class: 'grid' });
  for (const tv of scale.ticks) {
    grid.append(s('line', { x1: m.l, x2: width - m.r, y1: y(tv), y2: y(tv) }),
      s('text', { x: m.l - 5, y: y(tv) + 4, 'text-anchor': 'end', class: 'tick', text: yFormat(tv) }));
  }
  svgEl.append(grid);
  values.forEach((v, i) => {
    if (!(v > 0)) return;
    const bx = m.l + i * bw + Math.min(1, bw * 0.15);
    svgEl.append(s('rect', { x: bx.toFixed(1), y: y(v).toFixed(1), width: Math.max(1, bw - Math.min(2, bw * 0.3)).toFixed(1), height: Math.max(0.5, m.t + ih - y(v)).toFixed(1), fill: color, rx: 1 },
      s('title', { text: `${shortTimeFmt.format(xs[i])}: ${yFormat(v)}` })));
  });
  const everyN = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(iw / 80))));
  xs.forEach((t, i) => {
    if ((n - 1 - i) % everyN !== 0) return;
    const cx = m.l + i * bw + bw / 2;
    const atEnd = cx > width - m.r - 30;
    svgEl.append(s('text', { x: atEnd ? width - m.r : cx, y: height - 5, 'text-anchor': atEnd ? 'end' : 'middle', class: 'tick', text: step < 60_000 ? timeFmt.format(t) : shortTimeFmt.format(t) }));
  });
  svgEl.append(s('line', { x1: m.l, x2: m.l + iw, y1: m.t + ih, y2: m.t + ih, class: 'axis' }));
  host.replaceChildren(svgEl);
}

// ---------------------------------------------------------------------------------------------
// Views

const views = {};
let current = null;

function viewEl(name) {
  return document.getElementById(`view-${name}`);
}

function header(title, subtitle, ...extra) {
  return h('div', { class: 'view-head' },
    h('div', null, h('h1', { text: title }), subtitle ? h('p', { class: 'sub' }, withCode(subtitle)) : null),
    h('div', { class: 'view-tools' }, extra));
}

function parseHash() {
  const raw = decodeURIComponent(location.hash.replace(/^#/, ''));
  const [name, query] = raw.split('?');
  return { name: VIEWS.includes(name) ? name : 'stream', params: new URLSearchParams(query || '') };
}

function route() {
  const { name, params } = parseHash();
  if (current !== name) {
    if (current && views[current].leave) views[current].leave();
    for (const v of VIEWS) viewEl(v).hidden = v !== name;
    for (const a of document.querySelectorAll('.nav a[data-view]')) {
      if (a.dataset.view === name) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    current = name;
    document.title = `${name[0].toUpperCase()}${name.slice(1)} — OVASABI`;
    views[name].enter(params);
  } else if (views[name].params) {
    views[name].params(params);
  }
}

// Re-draw charts when the window changes size.
let resizeTimer = null;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => { if (current && views[current].redraw) views[current].redraw(); }, 150);
});

// ---------------------------------------------------------------------------------------------
// 1. Stream

views.stream = (() => {
  const root = viewEl('stream');
  const filters = { topic: '', type: '', subject: '', correlation_id: '' };
  const notice = noticeArea();
  const events = []; // newest first
  const byId = new Map(); // event id → {ev, row}
  let pendingRender = [];
  let paused = false;
  let held = [];
  let selectedId = null;
  let frame = 0;
  let received = 0;

  const inputs = {};
  const filterDefs = [
    ['topic', 'filter-topic', 'Topic', 'commerce.events, *.events, *.dlq'],
    ['type', 'filter-type', 'Type', 'order.placed, order.*'],
    ['subject', 'filter-subject', 'Subject', 'a subject'],
    ['correlation_id', 'filter-correlation', 'Correlation id', 'a correlation id'],
  ];
  let debounce = null;
  const filterBar = h('form', { class: 'filters', on: { submit: (e) => { e.preventDefault(); applyFilters(); } } },
    filterDefs.map(([key, testid, label, ph]) => {
      const input = h('input', {
        type: 'search', testid, placeholder: ph, autocomplete: 'off', spellcheck: false,
        attrs: { 'aria-label': label, name: key },
        on: {
          input: () => { clearTimeout(debounce); debounce = setTimeout(applyFilters, 500); },
          change: () => applyFilters(),
        },
      });
      inputs[key] = input;
      return h('label', { class: 'field' }, h('span', { text: label }), input);
    }),
    h('button', { type: 'button', class: 'ghost', text: 'Clear', on: { click: () => { for (const i of Object.values(inputs)) i.value = ''; applyFilters(); } } }));

  const pauseBtn = h('button', { type: 'button', class: 'primary', testid: 'pause', attrs: { 'aria-pressed': 'false' }, text: 'Pause', on: { click: togglePause } });
  const countEl = h('span', { class: 'muted count' });
  const tbody = h('tbody');
  const empty = h('div');
  const table = h('div', { class: 'table-scroll' },
    h('table', { class: 'grid-table events' },
      h('thead', null, h('tr', null, ['Time', 'Type', 'Topic', 'Subject', 'Correlation', 'Source', 'Schema'].map((c) => h('th', { text: c, attrs: { scope: 'col' } })))),
      tbody));
  const detail = h('aside', { class: 'detail', testid: 'event-detail', hidden: true, attrs: { 'aria-label': 'Event detail' } });
  const layout = h('div', { class: 'split' }, h('div', { class: 'split-main' }, table, empty), detail);

  root.append(header('Stream', 'Every event on the bus as it is published, newest first. Click one for its schema and causal tree.', countEl, pauseBtn),
    filterBar, notice.el, layout);

  const source = new LiveSource(streamUrl(), 'event', onEvent, (state) => {
    setConnection(state);
    if (state === 'live') notice.clear();
    if (state === 'reconnecting') probe();
  });

  function streamUrl() {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
    q.set('backlog', '200');
    return `/v1/events/stream?${q}`;
  }

  // When the stream fails, ask the same filters of /v1/events/recent: a 4xx names the mistake.
  async function probe() {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
    q.set('limit', '1');
    try {
      await api(`/v1/events/recent?${q}`, { timeout: 4000 });
    } catch (err) {
      if (err instanceof ApiError && err.status >= 400 && err.status < 500) {
        // Retrying cannot help: stop until the filters change.
        source.close();
        setConnection('reconnecting');
        notice.error('The filters were refused (change them to reconnect)', err);
      } else {
        notice.error('The event stream is down', err);
      }
    }
  }

  function applyFilters() {
    clearTimeout(debounce);
    const next = Object.fromEntries(Object.keys(filters).map((k) => [k, inputs[k].value.trim()]));
    if (Object.keys(filters).every((k) => filters[k] === next[k])) return;
    Object.assign(filters, next);
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
    const hash = `#stream${q.toString() ? `?${q}` : ''}`;
    if (location.hash !== hash) history.replaceState(null, '', hash);
    reset();
    notice.clear();
    source.url = streamUrl();
    source.delay = 1000;
    source.open();
  }

  function reset() {
    events.length = 0;
    byId.clear();
    held = [];
    pendingRender = [];
    tbody.replaceChildren();
    received = 0;
    updateChrome();
  }

  function onEvent(ev) {
    if (!ev || !ev.id) return;
    if (byId.has(ev.id) || held.some((e) => e.id === ev.id) || pendingRender.some((e) => e.id === ev.id)) return;
    received += 1;
    if (paused) {
      held.push(ev);
      if (held.length > STREAM_CAP) held.splice(0, held.length - STREAM_CAP);
      updateChrome();
      return;
    }
    pendingRender.push(ev);
    if (!frame) frame = requestAnimationFrame(flush);
  }

  function order(ev) {
    const t = parseTime(ev.published_at);
    return [Number.isFinite(t) ? t : 0, Number(ev.seq) || 0];
  }

  function newer(a, b) {
    const [ta, sa] = order(a);
    const [tb, sb] = order(b);
    return ta !== tb ? ta > tb : sa > sb;
  }

  function flush() {
    frame = 0;
    const batch = pendingRender;
    pendingRender = [];
    batch.sort((a, b) => (newer(a, b) ? 1 : -1)); // oldest first, so each lands on top
    for (const ev of batch) insert(ev);
    while (events.length > STREAM_CAP) {
      const old = events.pop();
      const entry = byId.get(old.id);
      if (entry) entry.row.remove();
      byId.delete(old.id);
    }
    updateChrome();
  }

  function insert(ev) {
    if (byId.has(ev.id)) return;
    const row = eventRow(ev);
    let i = 0;
    while (i < events.length && newer(events[i], ev)) i += 1;
    if (i >= STREAM_CAP) return;
    if (i === events.length) tbody.append(row);
    else tbody.insertBefore(row, byId.get(events[i].id).row);
    events.splice(i, 0, ev);
    byId.set(ev.id, { ev, row });
    if (i === 0 && events.length > 1) {
      row.classList.add('fresh');
      setTimeout(() => row.classList.remove('fresh'), 1200);
    }
  }

  function eventRow(ev) {
    const row = h('tr', {
      class: `event-row${ev.dead_letter ? ' dead' : ''}${ev.id === selectedId ? ' selected' : ''}`,
      testid: 'event-row',
      tabIndex: 0,
      data: { type: ev.type ?? '', id: ev.id ?? '', subject: ev.subject ?? '', correlationId: ev.correlation_id ?? '', topic: ev.topic ?? '' },
      on: {
        click: () => select(ev.id),
        keydown: (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); select(ev.id); } },
      },
    },
    h('td', { class: 'mono nowrap', title: fmtFull(ev.published_at), text: fmtClock(ev.published_at) }),
    h('td', { class: 'type' }, h('span', { class: 'type-name', text: ev.type ?? '' }), ev.dead_letter ? h('span', { class: 'badge bad', text: 'dead letter' }) : null),
    h('td', { class: 'mono nowrap' }, ev.topic ?? '', ev.offset !== undefined ? h('span', { class: 'muted', text: `@${ev.offset}` }) : null),
    h('td', { class: 'mono ellipsis', title: ev.subject ?? '', text: ev.subject ?? '—' }),
    h('td', { class: 'mono ellipsis', title: ev.correlation_id ?? '', text: ev.correlation_id ?? '—' }),
    h('td', { class: 'mono ellipsis muted', title: ev.source ?? '', text: ev.source ?? '' }),
    h('td', { class: 'nowrap', text: ev.schema ? `v${ev.schema.version}` : '—' }));
    return row;
  }

  function updateChrome() {
    const active = Object.values(filters).some(Boolean);
    countEl.textContent = `${fmtInt(events.length)} shown${events.length >= STREAM_CAP ? ' (latest 500)' : ''}`;
    pauseBtn.textContent = paused ? (held.length ? `Resume (${fmtInt(held.length)} new)` : 'Resume') : 'Pause';
    pauseBtn.setAttribute('aria-pressed', paused ? 'true' : 'false');
    pauseBtn.classList.toggle('paused', paused);
    if (events.length === 0) {
      empty.replaceChildren(active
        ? emptyState('No events match these filters yet. They appear here as soon as one is published; `Clear` shows every event.', 'stream-empty')
        : emptyState('No events yet. Run `ovasabi seed-demo` in another terminal, or start with `ovasabi up --demo`.', 'stream-empty'));
    } else {
      empty.replaceChildren();
    }
  }

  function togglePause() {
    paused = !paused;
    if (!paused) {
      pendingRender.push(...held);
      held = [];
      if (!frame) frame = requestAnimationFrame(flush);
    }
    updateChrome();
  }

  // ----- detail panel
  let detailToken = 0;

  function select(id) {
    const entry = byId.get(id);
    if (!entry) return;
    selectedId = id;
    for (const r of tbody.querySelectorAll('tr.selected')) r.classList.remove('selected');
    entry.row.classList.add('selected');
    renderDetail(entry.ev);
  }

  // The audit trail records an event a moment after it is published: wait for that moment
  // rather than ask too early and get a 404.
  function traceDelay(ev) {
    const age = Date.now() - parseTime(ev.published_at);
    return Number.isFinite(age) && age >= 0 && age < 1500 ? 1500 - age : 0;
  }

  function closeDetail() {
    selectedId = null;
    detailToken += 1;
    detail.hidden = true;
    layout.classList.remove('has-detail');
    for (const r of tbody.querySelectorAll('tr.selected')) r.classList.remove('selected');
  }

  function renderDetail(ev) {
    const token = ++detailToken;
    const schemaBox = h('div', { testid: 'event-schema', class: 'box' });
    const traceBox = h('div', { testid: 'event-trace', class: 'box' });
    const meta = h('dl', { class: 'meta' },
      metaRow('Topic', `${ev.topic ?? ''} @ ${ev.offset ?? '?'}`),
      metaRow('Source', ev.source),
      metaRow('Subject', ev.subject),
      metaRow('Time', ev.time ? fmtLocal(ev.time) : null),
      metaRow('Published', ev.published_at ? fmtLocal(ev.published_at) : null),
      metaRow('Correlation', ev.correlation_id, ev.correlation_id
        ? h('button', { type: 'button', class: 'link', text: 'filter by it', on: { click: () => { inputs.correlation_id.value = ev.correlation_id; applyFilters(); } } })
        : null),
      metaRow('Caused by', ev.causation_id));
    detail.replaceChildren(
      h('div', { class: 'detail-head' },
        h('div', null, h('h2', { text: ev.type ?? 'event' }), h('div', { class: 'mono muted small', text: ev.id })),
        h('button', { type: 'button', class: 'ghost close', text: '✕', attrs: { 'aria-label': 'Close the detail' }, on: { click: closeDetail } })),
      meta,
      h('h3', { text: 'Causal tree' }), traceBox,
      h('h3', { text: 'CloudEvent' }), jsonBlock(ev.event ?? ev, 'event-json'),
      h('h3', { text: 'Schema' }), schemaBox);
    detail.hidden = false;
    layout.classList.add('has-detail');
    detail.scrollTop = 0;
    loadSchema(ev, schemaBox, token);
    traceBox.replaceChildren(h('p', { class: 'muted', text: 'Loading the causal tree…' }));
    const wait = traceDelay(ev);
    if (wait) setTimeout(() => { if (token === detailToken) loadTrace(ev, traceBox, token, 0); }, wait);
    else loadTrace(ev, traceBox, token, 0);
  }

  function metaRow(label, value, extra) {
    return [h('dt', { text: label }), h('dd', { class: 'mono' }, value === null || value === undefined || value === '' ? h('span', { class: 'muted', text: '—' }) : String(value), extra ? ' ' : null, extra)];
  }

  async function loadSchema(ev, box, token) {
    if (!ev.schema) {
      box.replaceChildren(h('p', { class: 'muted' }, withCode('This event names no catalogued schema (no `dataschema` of the form `urn:ovasabi:schema:<type>:<version>`), so its data was not checked against a contract.')));
      return;
    }
    const { event_type: type, version } = ev.schema;
    box.replaceChildren(h('p', { class: 'muted', text: `Loading ${type} v${version}…` }));
    try {
      const schema = await api(`/v1/schemas/${enc(type)}/${enc(version)}`);
      if (token !== detailToken) return;
      box.replaceChildren(
        h('p', null, h('a', { href: `#schemas?type=${enc(type)}`, text: `${type} v${version}` }), schema && schema.description ? ` — ${schema.description}` : ''),
        h('details', null, h('summary', { text: 'JSON Schema' }), jsonBlock(schema)));
    } catch (err) {
      if (token !== detailToken) return;
      box.replaceChildren(h('p', { class: 'notice error', text: `Could not load the schema ${type} v${version}: ${describe(err)}` }),
        h('button', { type: 'button', class: 'ghost', text: 'Retry', on: { click: () => loadSchema(ev, box, token) } }));
    }
  }

  async function loadTrace(ev, box, token, tries) {
    if (tries === 0) box.replaceChildren(h('p', { class: 'muted', text: 'Loading the causal tree…' }));
    let trace;
    try {
      trace = await api(`/v1/trace/${enc(ev.id)}`);
    } catch (err) {
      if (token !== detailToken) return;
      const retry = h('button', { type: 'button', class: 'ghost', text: 'Retry', on: { click: () => loadTrace(ev, box, token, 0) } });
      if (err instanceof ApiError && err.status === 404) {
        box.replaceChildren(h('p', { class: 'muted' }, 'The audit trail has not recorded this event yet. ', retry));
        // The trail records events a moment after they are published: look again a few times.
        if (tries < 4) setTimeout(() => { if (token === detailToken) loadTrace(ev, box, token, tries + 1); }, 1500);
      } else {
        box.replaceChildren(h('p', { class: 'notice error', text: `Could not load the causal tree: ${describe(err)}` }), retry);
      }
      return;
    }
    if (token !== detailToken) return;
    renderTrace(trace, ev.id, box, () => loadTrace(ev, box, token, 0));
  }

  function renderTrace(trace, selected, box, reload) {
    const events = Array.isArray(trace.events) ? trace.events : [];
    const map = new Map(events.map((e) => [e.id, e]));
    const roots = (Array.isArray(trace.roots) && trace.roots.length ? trace.roots : events.filter((e) => !e.causation_id || !map.has(e.causation_id)).map((e) => e.id))
      .filter((id) => map.has(id));
    const seen = new Set();
    const at = (e) => parseTime(e.time ?? e.recorded_at);
    // A root shows its clock time, and, after the first tree, how long after that one it began.
    const firstTime = roots.length ? at(map.get(roots[0])) : NaN;
    const rootLabel = (e) => {
      const later = at(e) - firstTime;
      return Number.isFinite(later) && later > 0 ? `${fmtClock(e.time ?? e.recorded_at)} (+${fmtMs(later)})` : fmtClock(e.time ?? e.recorded_at);
    };

    function node(id, rootTime, depth) {
      const e = map.get(id);
      if (!e || seen.has(id)) return null;
      seen.add(id);
      const offset = at(e) - rootTime;
      const inStream = byId.has(id);
      const label = h('div', {
        class: `trace-node${id === selected ? ' current' : ''}${inStream && id !== selected ? ' clickable' : ''}`,
        testid: 'trace-node',
        data: { id },
        title: `${e.id}\n${e.topic}@${e.offset}\nrecorded ${e.recorded_at}`,
        on: inStream && id !== selected ? { click: () => select(id) } : undefined,
      },
      h('span', { class: 'trace-type', text: e.type }),
      h('span', { class: 'mono muted small', text: e.source }),
      e.subject ? h('span', { class: 'mono small', text: e.subject }) : null,
      h('span', { class: 'offset mono', text: depth === 0 ? rootLabel(e) : `+${fmtMs(Number.isFinite(offset) ? offset : NaN)}` }),
      Number(e.attempt) > 1 ? h('span', { class: 'badge warn', text: `redelivered · attempt ${e.attempt}` }) : null);
      const kids = (e.caused || []).map((c) => node(c, rootTime, depth + 1)).filter(Boolean);
      return h('li', null, label, kids.length ? h('ul', null, kids) : null);
    }

    const trees = roots.map((id) => node(id, at(map.get(id)), 0)).filter(Boolean);
    // Anything not reached from a root (a broken chain) is listed flat, so nothing is hidden.
    const orphans = events.filter((e) => !seen.has(e.id)).map((e) => node(e.id, at(e), 0)).filter(Boolean);
    box.replaceChildren(
      h('div', { class: 'trace-head' },
        h('span', { class: 'muted small', text: `${fmtInt(events.length)} event${events.length === 1 ? '' : 's'}${trace.correlation_id ? ` · correlation ${trace.correlation_id}` : ''}` }),
        h('button', { type: 'button', class: 'ghost small', text: 'Refresh', on: { click: reload } })),
      events.length ? h('ul', { class: 'trace' }, trees, orphans) : h('p', { class: 'muted', text: 'The trail holds nothing of this event.' }));
  }

  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && current === 'stream' && !detail.hidden) closeDetail();
  });

  function fromParams(params) {
    let changed = false;
    for (const key of Object.keys(filters)) {
      const v = (params.get(key) ?? (key === 'correlation_id' ? params.get('correlation') : null) ?? '').trim();
      if (v !== inputs[key].value) { inputs[key].value = v; changed = true; }
    }
    return changed;
  }

  updateChrome();
  return {
    start(params) {
      fromParams(params);
      Object.assign(filters, Object.fromEntries(Object.keys(filters).map((k) => [k, inputs[k].value.trim()])));
      source.url = streamUrl();
      source.open();
    },
    enter(params) { if (fromParams(params)) applyFilters(); },
    params(params) { if (fromParams(params)) applyFilters(); },
    leave() {},
  };
})();

// ---------------------------------------------------------------------------------------------
// 2. Topology

views.topology = (() => {
  const root = viewEl('topology');
  const notice = noticeArea();
  const stamp = h('span', { class: 'muted small' });
  const host = h('div', { class: 'topology-host' });
  root.append(header('Topology', 'Services → topics → consumer groups, from the schema catalog and the running consumers. Edges carry the last minutes\' event rates; groups show their lag.', stamp), notice.el, host);
  let last = null;
  const poller = new Poller(5000, async () => {
    try {
      last = await api('/v1/dashboard/topology');
      notice.clear();
      stamp.replaceChildren('updated ', relTime(new Date().toISOString()));
      draw();
    } catch (err) {
      notice.error('Could not load the topology', err);
    }
  });

  function draw() {
    if (!last) return;
    const t = last;
    const nodes = new Map();
    const add = (id, kind, name, info) => {
      if (!nodes.has(id)) nodes.set(id, { id, kind, name, info: info || {}, ins: [], outs: [] });
      else if (info) nodes.get(id).info = info;
      return nodes.get(id);
    };
    for (const sv of t.services || []) add(`service:${sv.name}`, 'service', sv.name, sv);
    for (const tp of t.topics || []) add(`topic:${tp.topic}`, 'topic', tp.topic, tp);
    for (const g of t.groups || []) add(`group:${g.group}`, 'group', g.group, g);
    const edges = [];
    for (const e of t.edges || []) {
      for (const end of [e.from, e.to]) {
        if (!nodes.has(end)) {
          const [kind, ...rest] = String(end).split(':');
          if (['service', 'topic', 'group'].includes(kind)) add(end, kind, rest.join(':'));
        }
      }
      const from = nodes.get(e.from);
      const to = nodes.get(e.to);
      if (!from || !to) continue;
      const edge = { from, to, rate: Number(e.rate_per_second) || 0, lag: e.lag };
      from.outs.push(edge);
      to.ins.push(edge);
      edges.push(edge);
    }
    const cols = { service: [], topic: [], group: [] };
    for (const n of nodes.values()) cols[n.kind].push(n);
    if (!nodes.size) {
      host.replaceChildren(emptyState('Nothing to draw yet: no services, topics or consumer groups. Start the platform with `ovasabi up`.'));
      return;
    }
    // Order each column by the mean position of its neighbours on the left (fewer crossings).
    cols.service.sort((a, b) => a.name.localeCompare(b.name));
    const place = (list, prev) => {
      const pos = new Map(prev.map((n, i) => [n, i]));
      const bary = (n) => {
        const ps = n.ins.map((e) => pos.get(e.from)).filter((p) => p !== undefined);
        return ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : Infinity;
      };
      list.sort((a, b) => bary(a) - bary(b) || a.name.localeCompare(b.name));
    };
    place(cols.topic, cols.service);
    place(cols.group, cols.topic);

    const width = Math.max(640, (host.clientWidth || 980) - 20);
    const nodeW = Math.min(230, Math.floor((width - 80) / 3.6));
    const nodeH = 46;
    const gap = 14;
    const top = 36;
    const rows = Math.max(cols.service.length, cols.topic.length, cols.group.length);
    const height = top + rows * (nodeH + gap) + 10;
    const colX = { service: 10, topic: Math.round(width / 2 - nodeW / 2), group: width - nodeW - 10 };
    for (const kind of Object.keys(cols)) {
      const list = cols[kind];
      const offset = ((rows - list.length) * (nodeH + gap)) / 2;
      list.forEach((n, i) => { n.x = colX[kind]; n.y = top + offset + i * (nodeH + gap); });
    }
    const maxRate = Math.max(0, ...edges.map((e) => e.rate));
    const svgEl = s('svg', { class: 'topology', 'data-testid': 'topology', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'Services, topics and consumer groups' });
    svgEl.append(
      s('text', { x: colX.service, y: 18, class: 'col-head', text: 'Services' }),
      s('text', { x: colX.topic, y: 18, class: 'col-head', text: 'Topics' }),
      s('text', { x: colX.group, y: 18, class: 'col-head', text: 'Consumer groups' }));
    const edgeLayer = s('g', { class: 'edges' });
    const placed = [];
    const labelLayer = s('g', { class: 'edge-labels' });
    // Fan the edges out along each node's side so they do not all meet in one point.
    const slot = (n, list, e) => {
      const i = list.indexOf(e);
      return n.y + nodeH / 2 + (list.length > 1 ? ((i / (list.length - 1)) - 0.5) * (nodeH - 14) : 0);
    };
    for (const n of nodes.values()) {
      n.outs.sort((a, b) => a.to.y - b.to.y);
      n.ins.sort((a, b) => a.from.y - b.from.y);
    }
    for (const e of [...edges].sort((a, b) => (Number(b.lag) || 0) - (Number(a.lag) || 0) || b.rate - a.rate)) {
      const x1 = e.from.x + nodeW;
      const y1 = slot(e.from, e.from.outs, e);
      const x2 = e.to.x;
      const y2 = slot(e.to, e.to.ins, e);
      const dx = (x2 - x1) / 2;
      const w = e.rate > 0 ? 1.5 + (maxRate > 0 ? 5.5 * Math.sqrt(e.rate / maxRate) : 0) : 1;
      const lagging = Number(e.lag) > 0;
      const title = `${e.from.name} → ${e.to.name}: ${fmtRate(e.rate)}${e.lag !== undefined && e.lag !== null ? `, lag ${fmtInt(e.lag)}` : ''}`;
      edgeLayer.append(s('path', {
        d: `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`,
        class: `edge${e.rate > 0 ? ' active' : ''}${lagging ? ' lagging' : ''}`,
        'stroke-width': w.toFixed(2),
        'data-edge': `${e.from.id}->${e.to.id}`,
      }, s('title', { text: title })));
      if (e.rate > 0 || lagging) {
        // The first point along the curve where the label overlaps no other label; none: the
        // edge's tooltip still tells its rate.
        const text = `${fmtRate(e.rate)}${lagging ? ` · lag ${fmtInt(e.lag)}` : ''}`;
        const lw = text.length * 6.2 + 4;
        const lh = 13;
        for (const tt of [0.5, 0.38, 0.62, 0.28, 0.72, 0.2, 0.8, 0.12, 0.88]) {
          const bx = (1 - tt) ** 3 * x1 + 3 * (1 - tt) ** 2 * tt * (x1 + dx) + 3 * (1 - tt) * tt ** 2 * (x2 - dx) + tt ** 3 * x2;
          const by = (1 - tt) ** 3 * y1 + 3 * (1 - tt) ** 2 * tt * y1 + 3 * (1 - tt) * tt ** 2 * y2 + tt ** 3 * y2 - 3;
          const box = { x0: bx - lw / 2, x1: bx + lw / 2, y0: by - lh + 3, y1: by + 3 };
          if (placed.some((b) => b.x0 < box.x1 && box.x0 < b.x1 && b.y0 < box.y1 && box.y0 < b.y1)) continue;
          placed.push(box);
          labelLayer.append(s('text', { x: bx.toFixed(1), y: by.toFixed(1), 'text-anchor': 'middle', class: `edge-label${lagging ? ' lagging' : ''}`, text }, s('title', { text: title })));
          break;
        }
      }
    }
    svgEl.append(edgeLayer);
    const nodeLayer = s('g', { class: 'nodes' });
    const maxChars = Math.floor((nodeW - 16) / 7.2);
    const clip = (text) => (text.length > maxChars ? `${text.slice(0, maxChars - 1)}…` : text);
    for (const n of nodes.values()) {
      let sub = '';
      let cls = '';
      const info = n.info;
      if (n.kind === 'service') {
        sub = `${(info.produces || []).length} topic${(info.produces || []).length === 1 ? '' : 's'} · ${(info.groups || []).length} group${(info.groups || []).length === 1 ? '' : 's'}`;
      } else if (n.kind === 'topic') {
        sub = `${fmtRate(info.rate_per_second ?? 0)} · ${(info.event_types || []).length} types`;
        if (Number(info.dead_letters) > 0) { sub += ` · ${fmtInt(info.dead_letters)} DLQ`; cls = ' warn'; }
      } else {
        const lag = Number(info.lag ?? 0);
        sub = `lag ${fmtInt(lag)} · ${fmtRate(info.rate_per_second ?? 0)}`;
        if (lag > 0) cls = lag > 100 ? ' bad' : ' warn';
      }
      const tip = [n.id];
      if (n.kind === 'topic' && info.event_types) tip.push(...info.event_types);
      if (n.kind === 'group' && info.service) tip.push(`service ${info.service}`);
      if (n.kind === 'group' && info.topics) tip.push(`reads ${info.topics.join(', ')}`);
      nodeLayer.append(s('g', { class: `node ${n.kind}${cls}`, 'data-node': n.id, transform: `translate(${n.x},${n.y})` },
        s('title', { text: tip.join('\n') }),
        s('rect', { width: nodeW, height: nodeH, rx: 8 }),
        s('text', { x: 10, y: 19, class: 'node-name', text: clip(n.name) }),
        s('text', { x: 10, y: 36, class: 'node-sub', text: clip(sub) })));
    }
    svgEl.append(nodeLayer, labelLayer);
    host.replaceChildren(h('div', { class: 'svg-scroll' }, svgEl),
      h('p', { class: 'muted small legend-note', text: 'Edge thickness follows the rate; amber and red groups are lagging. Hover a node or an edge for details.' }));
  }

  return {
    enter() { poller.start(); },
    leave() { poller.stop(); },
    redraw: draw,
  };
})();

// ---------------------------------------------------------------------------------------------
// 3. Throughput

views.throughput = (() => {
  const root = viewEl('throughput');
  const notice = noticeArea();
  const stamp = h('span', { class: 'muted small' });
  const topicsHost = h('div', { class: 'chart-host', testid: 'chart-topics' });
  const latencyHost = h('div', { class: 'chart-host', testid: 'chart-latency' });
  const groupSelect = h('select', { attrs: { 'aria-label': 'Group' }, on: { change: draw } }, h('option', { value: '', text: 'p95 of every group' }));
  const hiddenTopics = new Set();
  const hiddenGroups = new Set();
  const empty = h('div');
  root.append(header('Throughput', 'Events per second per topic and handler latency per consumer group, sampled by this process since it started (last 10 minutes).', stamp), notice.el, empty,
    h('div', { class: 'card' }, h('h2', { text: 'Events per second, by topic' }), topicsHost),
    h('div', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', { text: 'Handler latency' }), groupSelect), latencyHost));
  let last = null;

  const poller = new Poller(5000, async () => {
    try {
      last = await api('/v1/dashboard/series');
      notice.clear();
      stamp.replaceChildren('updated ', relTime(new Date().toISOString()));
      draw();
    } catch (err) {
      notice.error('Could not load the series', err);
    }
  });

  function draw() {
    if (!last) return;
    const points = Array.isArray(last.points) ? [...last.points] : [];
    const sampled = points.length > 0;
    const interval = Number(last.interval_seconds) || 5;
    if (points.length === 0) {
      empty.replaceChildren(emptyState('No samples yet: this process takes one every few seconds. Publish some events (`ovasabi seed-demo`) and they show here.'));
    } else {
      empty.replaceChildren();
    }
    const xs = points.map((p) => parseTime(p.at));
    if (xs.length === 1) { xs.unshift(xs[0] - interval * 1000); points.unshift({ topics: {}, groups: {} }); }
    if (xs.length === 0) {
      const now = Date.now();
      xs.push(now - 60_000, now);
      points.push({ topics: {}, groups: {} }, { topics: {}, groups: {} });
    }
    const topics = [...new Set(points.flatMap((p) => Object.keys(p.topics || {})))].sort();
    const topicSeries = topics.map((t, i) => ({
      name: t, color: seriesColor(i), values: points.map((p) => ((p.topics || {})[t] ?? 0) / interval),
    }));
    lineChart(topicsHost, { xs, series: topicSeries }, {
      yFormat: (v) => twoSignificant.format(v), tipFormat: (v) => `${twoSignificant.format(v)} events/s`, yLabel: 'events/s', hidden: hiddenTopics,
      onToggle: (name) => { if (hiddenTopics.has(name)) hiddenTopics.delete(name); else hiddenTopics.add(name); draw(); },
    });
    if (sampled && !topics.length) {
      topicsHost.append(h('p', { class: 'muted small chart-note' }, withCode('No events published in this window. `ovasabi seed-demo` in another terminal makes some.')));
    }

    const groups = [...new Set(points.flatMap((p) => Object.keys(p.groups || {})))].sort();
    const chosen = groupSelect.value;
    const known = [...groupSelect.options].slice(1).map((o) => o.value);
    if (known.join('\n') !== groups.join('\n')) {
      groupSelect.replaceChildren(h('option', { value: '', text: 'p95 of every group' }), ...groups.map((g) => h('option', { value: g, text: `${g}: mean and p95` })));
      groupSelect.value = groups.includes(chosen) ? chosen : '';
    }
    const lat = (p, g, key) => {
      const v = ((p.groups || {})[g] || {})[key];
      const handled = ((p.groups || {})[g] || {}).handled;
      return v === null || v === undefined || handled === 0 ? null : Number(v);
    };
    let latSeries;
    if (groupSelect.value) {
      const g = groupSelect.value;
      const idx = groups.indexOf(g);
      latSeries = [
        { name: `${g} p95`, color: seriesColor(idx), values: points.map((p) => lat(p, g, 'p95_ms')) },
        { name: `${g} mean`, color: seriesColor(idx), dash: true, values: points.map((p) => lat(p, g, 'mean_ms')) },
      ];
    } else {
      latSeries = groups.map((g, i) => ({ name: g, color: seriesColor(i), values: points.map((p) => lat(p, g, 'p95_ms')) }));
    }
    lineChart(latencyHost, { xs, series: latSeries }, {
      yFormat: (v) => oneDecimal.format(v), tipFormat: fmtMs, yLabel: 'ms', hidden: hiddenGroups,
      onToggle: (name) => { if (hiddenGroups.has(name)) hiddenGroups.delete(name); else hiddenGroups.add(name); draw(); },
    });
  }

  return {
    enter() { poller.start(); },
    leave() { poller.stop(); },
    redraw: draw,
  };
})();

// ---------------------------------------------------------------------------------------------
// 4. Consumers and dead letters

views.consumers = (() => {
  const root = viewEl('consumers');
  const notice = noticeArea();
  const dlqNotice = noticeArea();
  const stamp = h('span', { class: 'muted small' });
  const summary = h('div', { class: 'cards summary' });
  const groupBody = h('tbody');
  const topicBody = h('tbody');
  const groupsEmpty = h('div');
  const dlqList = h('div', { class: 'dead-letters' });
  const report = h('div', { class: 'report', attrs: { role: 'status', 'aria-live': 'polite' } });
  const redriveAllBox = h('div', { class: 'confirm-box' });
  const open = new Set();
  let deadLetters = [];
  let pendingSupported = true;

  root.append(header('Consumers', 'Each consumer group\'s lag, work and latency (counters since this process started), and the dead letters waiting for a person.', stamp),
    notice.el, summary,
    h('div', { class: 'card' }, h('h2', { text: 'Consumer groups' }),
      h('div', { class: 'table-scroll' }, h('table', { class: 'grid-table' },
        h('thead', null, h('tr', null, ['Service', 'Group', 'Topics', 'Lag', 'Handled / acked', 'Redeliveries', 'Dead-lettered', 'p50', 'p95'].map((c, i) => h('th', { text: c, class: i >= 3 ? 'num' : '', attrs: { scope: 'col' } })))),
        groupBody)), groupsEmpty),
    h('div', { class: 'card' },
      h('div', { class: 'card-head' }, h('h2', { text: 'Dead letters' }), redriveAllBox),
      dlqNotice.el, report, dlqList),
    h('details', { class: 'card' }, h('summary', { text: 'Topics' }),
      h('div', { class: 'table-scroll' }, h('table', { class: 'grid-table' },
        h('thead', null, h('tr', null, ['Topic', 'Events', 'Next offset', 'Rate', 'Dead letters'].map((c, i) => h('th', { text: c, class: i >= 1 ? 'num' : '', attrs: { scope: 'col' } })))),
        topicBody))));

  const overviewPoller = new Poller(2000, async () => {
    try {
      const o = await api('/v1/dashboard/overview');
      notice.clear();
      stamp.replaceChildren('updated ', relTime(o.at || new Date().toISOString()));
      renderOverview(o);
    } catch (err) {
      notice.error('Could not load the consumers', err);
    }
  });

  const dlqPoller = new Poller(5000, loadDeadLetters);

  function card(label, value, sub, tone) {
    return h('div', { class: `stat${tone ? ` ${tone}` : ''}` }, h('div', { class: 'stat-label', text: label }), h('div', { class: 'stat-value', text: value }), sub ? h('div', { class: 'stat-sub', text: sub }) : null);
  }

  function renderOverview(o) {
    const groups = Array.isArray(o.groups) ? [...o.groups] : [];
    groups.sort((a, b) => String(a.service).localeCompare(String(b.service)) || String(a.group).localeCompare(String(b.group)));
    const outbox = o.outbox || {};
    summary.replaceChildren(
      card('Total lag', fmtInt(o.lag ?? 0), 'events published, not yet acked', Number(o.lag) > 0 ? 'warn' : ''),
      card('Dead letters', fmtInt(o.dead_letters ?? 0), 'kept on the .dlq topics, re-driven or not; those waiting are listed below', deadLetters.length > 0 ? 'bad' : ''),
      card('Outbox backlog', fmtInt(outbox.backlog ?? 0), Number(outbox.backlog) > 0 ? `oldest ${oneDecimal.format(outbox.oldest_age_seconds ?? 0)} s` : 'rows waiting to be published', Number(outbox.backlog) > 0 ? 'warn' : ''),
      card('Groups', fmtInt(groups.length), `${fmtInt((o.topics || []).length)} topics`));
    groupBody.replaceChildren(...groups.map((g) => {
      const hd = g.handler || {};
      const lag = Number(g.lag ?? 0);
      const lagTitle = g.lag_by_topic ? Object.entries(g.lag_by_topic).map(([t, n]) => `${t}: ${n}`).join('\n') : '';
      return h('tr', { testid: 'group-row', data: { group: g.group, lag: lag, service: g.service } },
        h('td', { text: g.service ?? '' }),
        h('td', { class: 'mono', text: g.group ?? '' }),
        h('td', { class: 'topics' }, (g.topics || []).map((t) => h('span', { class: 'chip mono', text: t }))),
        h('td', { class: `num${lag > 0 ? ' warn-text' : ''}`, title: lagTitle, text: fmtInt(lag) }),
        h('td', { class: 'num', text: `${fmtInt(g.received ?? 0)} / ${fmtInt(g.acked ?? 0)}` }),
        h('td', { class: `num${Number(g.redeliveries) > 0 ? ' warn-text' : ''}`, text: fmtInt(g.redeliveries ?? 0) }),
        h('td', { class: `num${Number(g.dead_lettered) > 0 ? ' bad-text' : ''}`, text: fmtInt(g.dead_lettered ?? 0) }),
        h('td', { class: 'num', text: fmtMs(hd.count ? hd.p50_ms : null) }),
        h('td', { class: 'num', text: fmtMs(hd.count ? hd.p95_ms : null) }));
    }));
    groupsEmpty.replaceChildren(groups.length ? '' : emptyState('No consumer groups run in this process. `ovasabi up` starts every service with its groups.'));
    const topics = Array.isArray(o.topics) ? o.topics : [];
    topicBody.replaceChildren(...topics.map((t) => h('tr', null,
      h('td', { class: 'mono', text: t.topic }),
      h('td', { class: 'num', text: fmtInt(t.events) }),
      h('td', { class: 'num', text: fmtInt(t.next_offset) }),
      h('td', { class: 'num', text: fmtRate(t.rate_per_second) }),
      h('td', { class: `num${Number(t.dead_letters) > 0 ? ' bad-text' : ''}`, text: fmtInt(t.dead_letters) }))));
  }

  async function loadDeadLetters() {
    try {
      let items;
      if (pendingSupported) {
        try {
          items = (await api('/v1/dlq?pending=true')).items;
        } catch (err) {
          // An older server refuses `pending`: list everything, keep what is not re-driven.
          if (!(err instanceof ApiError && err.status === 422)) throw err;
          pendingSupported = false;
        }
      }
      if (!pendingSupported) items = (await api('/v1/dlq')).items;
      deadLetters = (Array.isArray(items) ? items : []).filter((d) => !d.redriven_at);
      dlqNotice.clear();
      renderDeadLetters();
    } catch (err) {
      dlqNotice.error('Could not load the dead letters', err);
    }
  }

  let confirmingIds = null;

  function renderDeadLetters() {
    const ids = deadLetters.map((d) => d.id).join('\n');
    renderRedriveAll(confirmingIds !== null && confirmingIds === ids);
    if (!deadLetters.length) {
      dlqList.replaceChildren(emptyState('No dead letters. Events a consumer gives up on appear here.', 'dead-letters-empty'));
      return;
    }
    dlqList.replaceChildren(h('div', { class: 'table-scroll' }, h('table', { class: 'grid-table dlq' },
      h('thead', null, h('tr', null, ['', '', 'Type', 'Group', 'Reason', 'Error', 'Attempts', 'Dead-lettered', 'Id'].map((c, i) => h('th', { text: c, class: i === 6 ? 'num' : '', attrs: { scope: 'col' } })))),
      deadLetters.map(deadLetterRows))));
  }

  function deadLetterRows(d) {
    const isOpen = open.has(d.id);
    const tb = h('tbody', { class: 'dl-group' });
    const toggle = h('button', {
      type: 'button', class: 'ghost icon', text: isOpen ? '▾' : '▸',
      attrs: { 'aria-expanded': isOpen ? 'true' : 'false', 'aria-label': 'Show the event' },
      on: { click: () => { if (open.has(d.id)) open.delete(d.id); else open.add(d.id); renderDeadLetters(); } },
    });
    const btn = h('button', { type: 'button', class: 'primary small', testid: 'redrive', text: 'Redrive', on: { click: () => redrive([d.id], btn) } });
    tb.append(h('tr', { testid: 'dead-letter', data: { id: d.id, type: d.type } },
      h('td', null, toggle),
      h('td', null, btn),
      h('td', null, h('div', { text: d.type ?? '' }), h('div', { class: 'mono small', text: d.topic ?? '' })),
      h('td', { class: 'mono', text: d.group ?? '—' }),
      h('td', null, d.reason ? h('span', { class: 'badge bad', text: d.reason }) : '—'),
      h('td', { class: 'error-text', title: d.error ?? '', text: d.error ?? '—' }),
      h('td', { class: 'num', text: d.attempts === null || d.attempts === undefined ? '—' : (typeof d.attempts === 'number' ? fmtInt(d.attempts) : String(d.attempts)) }),
      h('td', { class: 'nowrap' }, relTime(d.dead_lettered_at)),
      h('td', { class: 'mono nowrap small', text: d.id })));
    if (isOpen) {
      tb.append(h('tr', { class: 'expanded' }, h('td', { attrs: { colspan: 9 } }, jsonBlock(d.event, 'dead-letter-json'))));
    }
    return tb;
  }

  function renderRedriveAll(confirming) {
    if (!deadLetters.length) { confirmingIds = null; redriveAllBox.replaceChildren(); return; }
    confirmingIds = confirming ? deadLetters.map((d) => d.id).join('\n') : null;
    if (!confirming) {
      redriveAllBox.replaceChildren(h('button', { type: 'button', class: 'ghost', testid: 'redrive-all', text: `Redrive all (${fmtInt(deadLetters.length)})`, on: { click: () => renderRedriveAll(true) } }));
      return;
    }
    const ids = deadLetters.map((d) => d.id);
    const yes = h('button', { type: 'button', class: 'danger', testid: 'redrive-all-confirm', text: `Yes, redrive ${fmtInt(ids.length)}`, on: { click: () => redrive(ids, yes) } });
    const hadFocus = redriveAllBox.contains(document.activeElement);
    redriveAllBox.replaceChildren(h('span', { class: 'small', text: `Publish ${fmtInt(ids.length)} dead letter${ids.length === 1 ? '' : 's'} again onto their topics?` }), yes,
      h('button', { type: 'button', class: 'ghost', text: 'Cancel', on: { click: () => renderRedriveAll(false) } }));
    if (hadFocus || document.activeElement === document.body) yes.focus();
  }

  async function redrive(ids, button) {
    if (button) { button.disabled = true; button.textContent = 'Redriving…'; }
    dlqPoller.stop();
    try {
      const r = await api('/v1/dlq/redrive', { method: 'POST', body: { ids }, timeout: 30_000 });
      confirmingIds = null;
      showReport(r);
    } catch (err) {
      report.replaceChildren(h('p', { class: 'notice error', text: `The redrive failed: ${describe(err)}` }));
    } finally {
      dlqPoller.start();
      overviewPoller.now();
    }
  }

  function showReport(r) {
    const list = (k) => (Array.isArray(r[k]) ? r[k] : []);
    const parts = [];
    const line = (label, items, tone) => h('li', { class: tone },
      h('strong', { text: `${label}: ${fmtInt(items.length)}` }),
      items.length ? h('ul', null, items.map((it) => h('li', { class: 'mono small' },
        `${it.id}`,
        it.topic ? ` → ${it.topic}${it.offset !== null && it.offset !== undefined ? `@${it.offset}` : ''}` : '',
        it.redriven_at ? ` (re-driven ${fmtFull(it.redriven_at)})` : '',
        it.error ? h('span', { class: 'bad-text', text: ` — ${it.error}` }) : null))) : null);
    parts.push(line('Redriven', list('redriven'), 'good'), line('Skipped (re-driven already)', list('skipped'), 'warn'), line('Failed', list('failed'), list('failed').length ? 'bad' : ''));
    report.replaceChildren(h('div', { class: 'report-box' },
      h('div', { class: 'report-head' }, h('span', { text: 'Redrive report' }), h('button', { type: 'button', class: 'ghost small', text: 'Dismiss', on: { click: () => report.replaceChildren() } })),
      h('ul', { class: 'report-list' }, parts)));
  }

  return {
    enter() { overviewPoller.start(); dlqPoller.start(); },
    leave() { overviewPoller.stop(); dlqPoller.stop(); },
  };
})();

// ---------------------------------------------------------------------------------------------
// 5. Analytics

views.analytics = (() => {
  const root = viewEl('analytics');
  const notice = noticeArea();
  const LABELS = {
    signups: 'Sign-ups', posts: 'Posts', comments: 'Comments', reactions: 'Reactions', orders: 'Orders',
    payments_completed: 'Payments completed', payments_failed: 'Payments failed', messages: 'Messages', fraud_holds: 'Fraud holds',
  };
  const ORDER = Object.keys(LABELS);
  const ALERTS = new Set(['payments_failed', 'fraud_holds']);
  const stamp = h('span', { class: 'muted small' });
  const liveBadge = h('span', { class: 'badge', text: 'connecting' });
  const cards = h('div', { class: 'cards metrics' });
  const charts = h('div', { class: 'chart-grid' });
  const active = h('div', { class: 'cards' });
  const topList = h('ol', { class: 'top-list' });
  root.append(header('Analytics', 'Counted by the analytics consumer from the event log; updated live.', stamp, liveBadge),
    notice.el, cards,
    h('h2', { class: 'section', text: 'Per minute, last hour' }), charts,
    h('div', { class: 'two-col' },
      h('div', { class: 'card' }, h('h2', { text: 'Active users' }), active),
      h('div', { class: 'card' }, h('h2', { text: 'Top content, last hour' }), topList)));
  const cardEls = new Map();
  let last = null;

  const source = new LiveSource('/v1/analytics/stream', 'analytics', (snap) => { notice.clear(); render(snap); }, (state) => {
    liveBadge.textContent = state === 'live' ? 'live' : state === 'connecting' ? 'connecting' : 'reconnecting';
    liveBadge.className = `badge ${state === 'live' ? 'good' : 'warn'}`;
    if (state === 'reconnecting') notice.error('The analytics stream closed', new TypeError('unreachable'));
  });

  async function loadOnce() {
    try {
      const snap = await api('/v1/analytics');
      if (!last) render(snap);
    } catch (err) {
      notice.error('Could not load the analytics', err);
    }
  }

  function label(key) {
    return LABELS[key] || key.replace(/[_.]+/g, ' ').replace(/^\w/, (c) => c.toUpperCase());
  }

  function metricCard(key) {
    let c = cardEls.get(key);
    if (c) return c;
    const value = h('div', { class: 'stat-value', testid: `metric-${key}` });
    const sub = h('div', { class: 'stat-sub' });
    const el = h('div', { class: 'stat' }, h('div', { class: 'stat-label', text: label(key) }), value, sub);
    c = { el, value, sub };
    cardEls.set(key, c);
    return c;
  }

  function render(snap) {
    if (!snap || typeof snap !== 'object') return;
    last = snap;
    stamp.replaceChildren('as of ', relTime(snap.at || new Date().toISOString()));
    const totals = snap.totals || {};
    const hour = snap.last_hour || {};
    const keys = Object.keys(totals).filter((k) => typeof totals[k] === 'number');
    keys.sort((a, b) => {
      const ia = ORDER.indexOf(a);
      const ib = ORDER.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
    });
    const els = [];
    for (const k of keys) {
      const c = metricCard(k);
      const v = totals[k];
      c.value.textContent = fmtInt(v);
      c.value.dataset.value = String(v);
      c.sub.textContent = typeof hour[k] === 'number' ? `${fmtInt(hour[k])} in the last hour` : '';
      c.el.className = `stat${ALERTS.has(k) && v > 0 ? ' bad' : ''}`;
      els.push(c.el);
    }
    // Revenue: one line per currency.
    const rc = metricCard('revenue');
    const rev = Array.isArray(totals.revenue) ? totals.revenue : [];
    const revHour = Array.isArray(hour.revenue) ? hour.revenue : [];
    rc.value.replaceChildren(...(rev.length ? rev.map((r) => h('div', { text: fmtMoney(r.amount_minor, r.currency) })) : [h('span', { class: 'muted', text: fmtMoney(0, 'EUR') })]));
    rc.value.dataset.value = JSON.stringify(Object.fromEntries(rev.map((r) => [r.currency, r.amount_minor])));
    rc.sub.textContent = revHour.length ? `${revHour.map((r) => fmtMoney(r.amount_minor, r.currency)).join(' · ')} in the last hour` : 'none in the last hour';
    rc.el.className = 'stat wide revenue';
    els.push(rc.el);
    cards.replaceChildren(...els);
    drawCharts();
    const au = snap.active_users || {};
    active.replaceChildren(
      h('div', { class: 'stat' }, h('div', { class: 'stat-label', text: 'Last 5 minutes' }), h('div', { class: 'stat-value', testid: 'active-5m', text: fmtInt(au.last_5_minutes ?? 0) })),
      h('div', { class: 'stat' }, h('div', { class: 'stat-label', text: 'Last hour' }), h('div', { class: 'stat-value', testid: 'active-1h', text: fmtInt(au.last_hour ?? 0) })));
    const top = Array.isArray(snap.top_content) ? snap.top_content : [];
    const maxE = Math.max(1, ...top.map((t) => Number(t.engagement) || 0));
    topList.replaceChildren(...(top.length
      ? top.map((t) => h('li', null,
        h('span', { class: 'mono ellipsis', title: t.content_id, text: t.content_id }),
        h('span', { class: 'bar', attrs: { style: `--w:${((Number(t.engagement) || 0) / maxE) * 100}%` } }),
        h('span', { class: 'num', text: fmtInt(t.engagement) })))
      : [h('li', { class: 'empty-li' }, ...withCode('No engagement in the last hour. Posts, comments and reactions count here (`ovasabi seed-demo` makes some).'))]));
  }

  function drawCharts() {
    if (!last || root.hidden) return;
    const snap = last;
    const per = snap.per_minute || {};
    const at = parseTime(snap.at) || Date.now();
    const endMinute = Math.floor(at / 60_000) * 60_000;
    const xs = Array.from({ length: 60 }, (_, i) => endMinute - (59 - i) * 60_000);
    const series = (key) => {
      const map = new Map();
      for (const p of Array.isArray(per[key]) ? per[key] : []) {
        const t = Math.floor(parseTime(p.minute) / 60_000) * 60_000;
        map.set(t, (map.get(t) || 0) + Number(p.value || 0));
      }
      return xs.map((t) => map.get(t) || 0);
    };
    const specs = [
      ['signups', 'Sign-ups', fmtInt, 0],
      ['posts', 'Posts', fmtInt, 1],
      ['orders', 'Orders', fmtInt, 2],
    ];
    const revenueKeys = Object.keys(per).filter((k) => k.startsWith('revenue.'));
    const totalsRev = Array.isArray((snap.totals || {}).revenue) ? snap.totals.revenue.map((r) => `revenue.${r.currency}`) : [];
    const currencies = [...new Set([...revenueKeys, ...totalsRev])].map((k) => k.slice('revenue.'.length));
    if (!currencies.length) currencies.push('EUR');
    const boxes = [];
    for (const [key, title, fmt, ci] of specs) {
      const host = h('div', { class: 'chart-host small', testid: `chart-${key}` });
      const values = series(key);
      const sum = values.reduce((a, b) => a + b, 0);
      boxes.push([h('div', { class: 'card' }, h('div', { class: 'card-head' }, h('h3', { text: title }), h('span', { class: 'muted small', text: `${fmtInt(sum)} in the hour` })), host), host, values, { yFormat: (v) => compactFmt.format(v), color: seriesColor(ci), label: title }]);
    }
    for (const cur of currencies) {
      fmtMoney(0, cur); // caches the formatter, for minorToMajor
      const host = h('div', { class: 'chart-host small', testid: `chart-revenue-${cur}` });
      const values = series(`revenue.${cur}`).map((v) => minorToMajor(v, cur));
      const sumMinor = series(`revenue.${cur}`).reduce((a, b) => a + b, 0);
      boxes.push([h('div', { class: 'card' }, h('div', { class: 'card-head' }, h('h3', { text: `Revenue (${cur})` }), h('span', { class: 'muted small', text: `${fmtMoney(sumMinor, cur)} in the hour` })), host), host, values, { yFormat: (v) => compactFmt.format(v), color: seriesColor(3), label: `Revenue ${cur}` }]);
    }
    charts.replaceChildren(...boxes.map((b) => b[0]));
    for (const [, host, values, opts] of boxes) barChart(host, xs, values, opts);
  }

  return {
    enter() { loadOnce(); source.open(); },
    leave() { source.close(); },
    redraw: drawCharts,
  };
})();

// ---------------------------------------------------------------------------------------------
// 6. Schemas

views.schemas = (() => {
  const root = viewEl('schemas');
  const notice = noticeArea();
  const search = h('input', { type: 'search', placeholder: 'Search types, topics, services…', testid: 'schema-search', attrs: { 'aria-label': 'Search the schemas' }, on: { input: renderList } });
  const tbody = h('tbody');
  const listEmpty = h('div');
  const detail = h('div', { class: 'schema-detail', testid: 'schema-detail', hidden: true });
  const layout = h('div', { class: 'split' },
    h('div', { class: 'split-main' },
      h('div', { class: 'table-scroll' }, h('table', { class: 'grid-table schemas' },
        h('thead', null, h('tr', null, ['Type', 'Topic', 'Latest', 'Compatibility', 'Producers', 'Consumers', 'Description'].map((c) => h('th', { text: c, attrs: { scope: 'col' } })))),
        tbody)), listEmpty),
    detail);
  detail.classList.add('detail');
  root.append(header('Schemas', 'Every event type in the catalog: its versions, examples, compatibility mode, producers and consumers.', search), notice.el, layout);
  let items = null;
  let selected = null;
  let token = 0;

  async function load() {
    try {
      const r = await api('/v1/schemas');
      items = Array.isArray(r.items) ? r.items : [];
      items.sort((a, b) => String(a.event_type).localeCompare(String(b.event_type)));
      notice.clear();
      renderList();
    } catch (err) {
      notice.error('Could not load the schemas', err);
      setTimeout(() => { if (current === 'schemas' && !items) load(); }, 5000);
    }
  }

  function renderList() {
    if (!items) return;
    const q = search.value.trim().toLowerCase();
    const shown = items.filter((it) => !q || [it.event_type, it.topic, it.description, ...(it.producers || []), ...(it.consumers || [])]
      .some((v) => String(v ?? '').toLowerCase().includes(q)));
    tbody.replaceChildren(...shown.map((it) => h('tr', {
      testid: 'schema-row', data: { type: it.event_type }, tabIndex: 0,
      class: `clickable${it.event_type === selected ? ' selected' : ''}`,
      on: { click: () => choose(it.event_type), keydown: (e) => { if (e.key === 'Enter') choose(it.event_type); } },
    },
    h('td', { class: 'mono strong', text: it.event_type }),
    h('td', { class: 'mono', text: it.topic ?? '' }),
    h('td', { text: it.latest !== undefined ? `v${it.latest}` : '' }),
    h('td', null, h('span', { class: 'chip', text: it.compatibility ?? '' })),
    h('td', null, (it.producers || []).map((p) => h('span', { class: 'chip', text: p }))),
    h('td', null, (it.consumers || []).map((p) => h('span', { class: 'chip', text: p }))),
    h('td', { class: 'desc', text: it.description ?? '' }))));
    listEmpty.replaceChildren(!items.length
      ? emptyState('The catalog is empty. Schemas live under `schemas/<type>/v<N>.json`.')
      : !shown.length ? emptyState(`No event type matches “${search.value}”.`) : '');
  }

  async function choose(type) {
    selected = type;
    const my = ++token;
    const q = `#schemas?type=${enc(type)}`;
    if (location.hash !== q) history.replaceState(null, '', q);
    for (const r of tbody.querySelectorAll('tr')) r.classList.toggle('selected', r.dataset.type === type);
    detail.hidden = false;
    layout.classList.add('has-detail');
    detail.replaceChildren(h('p', { class: 'muted', text: `Loading ${type}…` }));
    try {
      const r = await api(`/v1/schemas/${enc(type)}`);
      if (my !== token) return;
      renderDetail(r);
    } catch (err) {
      if (my !== token) return;
      detail.replaceChildren(h('p', { class: 'notice error', text: `Could not load ${type}: ${describe(err)}` }),
        h('button', { type: 'button', class: 'ghost', text: 'Retry', on: { click: () => choose(type) } }));
    }
    if (window.innerWidth < 900) detail.scrollIntoView({ behavior: 'smooth', block: 'start' });
  }

  function renderDetail(r) {
    const meta = (items || []).find((it) => it.event_type === r.event_type) || {};
    const versions = Array.isArray(r.versions) ? [...r.versions].sort((a, b) => b.version - a.version) : [];
    detail.replaceChildren(
      h('div', { class: 'detail-head' },
        h('div', null, h('h2', { class: 'mono', text: r.event_type }), meta.description ? h('p', { class: 'sub', text: meta.description }) : null),
        h('button', { type: 'button', class: 'ghost close', text: '✕', attrs: { 'aria-label': 'Close' }, on: { click: () => { detail.hidden = true; layout.classList.remove('has-detail'); selected = null; renderList(); history.replaceState(null, '', '#schemas'); } } })),
      h('dl', { class: 'meta' },
        h('dt', { text: 'Topic' }), h('dd', { class: 'mono', text: meta.topic ?? '—' }),
        h('dt', { text: 'Compatibility' }), h('dd', { text: r.compatibility ?? meta.compatibility ?? '—' }),
        h('dt', { text: 'Producers' }), h('dd', { text: (meta.producers || []).join(', ') || '—' }),
        h('dt', { text: 'Consumers' }), h('dd', { text: (meta.consumers || []).join(', ') || '—' })),
      h('p', null, h('a', { href: `#stream?type=${enc(r.event_type)}`, text: `See ${r.event_type} events live →` })),
      ...versions.map((v, i) => {
        const schema = v.schema || {};
        const examples = Array.isArray(schema.examples) ? schema.examples : [];
        return h('details', { class: 'version', open: i === 0, testid: 'schema-version', data: { version: v.version } },
          h('summary', null, h('strong', { text: `v${v.version}` }), i === 0 ? h('span', { class: 'badge good', text: 'latest' }) : null),
          h('div', { class: 'version-body' },
            h('h4', { text: 'Changes' }),
            h('p', { class: v.changes ? 'changes' : 'muted' }, withCode(v.changes || (v.version === 1 ? 'The first version.' : 'No change note.'))),
            h('h4', { text: `Examples (${examples.length})` }),
            examples.length ? examples.map((ex) => jsonBlock(ex, 'schema-example')) : h('p', { class: 'muted', text: 'This version has no examples.' }),
            h('details', null, h('summary', { text: 'JSON Schema' }), jsonBlock(schema, 'schema-json'))));
      }));
  }

  return {
    enter(params) {
      if (!items) load().then(() => { const t = params.get('type'); if (t) choose(t); });
      else { const t = params.get('type'); if (t && t !== selected) choose(t); }
    },
    params(params) { const t = params.get('type'); if (t && t !== selected && items) choose(t); },
    leave() {},
  };
})();

// ---------------------------------------------------------------------------------------------
// 7. Webhooks

views.webhooks = (() => {
  const root = viewEl('webhooks');
  const notice = noticeArea();
  const stamp = h('span', { class: 'muted small' });
  const list = h('div', { class: 'webhooks' });
  root.append(header('Webhooks', 'Partner endpoints, their state and their latest delivery attempts.', stamp), notice.el, list);

  const poller = new Poller(5000, async () => {
    try {
      const r = await api('/v1/dashboard/webhooks');
      notice.clear();
      stamp.replaceChildren('updated ', relTime(new Date().toISOString()));
      render(Array.isArray(r.items) ? r.items : []);
    } catch (err) {
      notice.error('Could not load the webhooks', err);
    }
  });

  const STATE_TONE = { active: 'good', paused: 'warn', disabled: 'bad' };

  function render(items) {
    if (!items.length) {
      list.replaceChildren(emptyState('No webhook endpoints. Add a partner with `ovasabi webhooks partner add`, then register an endpoint with `POST /v1/webhooks`.', 'webhooks-empty'));
      return;
    }
    list.replaceChildren(...items.map((ep) => {
      const d = ep.deliveries || {};
      const attempts = Array.isArray(ep.recent_attempts) ? ep.recent_attempts : [];
      const filters = Array.isArray(ep.filters) ? ep.filters : ep.filters ? [String(ep.filters)] : [];
      return h('article', { class: 'card webhook', testid: 'webhook-row', data: { id: ep.id, state: ep.state } },
        h('div', { class: 'webhook-head' },
          h('div', { class: 'webhook-title' },
            h('span', { class: 'partner', text: ep.partner ?? '—' }),
            h('span', { class: 'mono url', title: ep.url ?? '', text: ep.url ?? '' })),
          h('span', { class: `badge state ${STATE_TONE[ep.state] || ''}`, testid: 'webhook-state', text: ep.state ?? 'unknown' })),
        ep.disabled_reason ? h('p', { class: 'bad-text small', text: `Disabled: ${ep.disabled_reason}` }) : null,
        ep.description ? h('p', { class: 'muted small', text: ep.description }) : null,
        h('div', { class: 'webhook-meta' },
          h('span', { class: 'filters-chips' }, h('span', { class: 'muted small', text: 'types ' }), filters.map((f) => h('span', { class: 'chip mono', text: f }))),
          h('span', { class: 'counts' },
            h('span', { class: 'count good-text', text: `${fmtInt(d.delivered ?? 0)} delivered` }),
            h('span', { class: `count${Number(d.failed) > 0 ? ' bad-text' : ''}`, text: `${fmtInt(d.failed ?? 0)} failed` }),
            h('span', { class: `count${Number(d.pending) > 0 ? ' warn-text' : ''}`, text: `${fmtInt(d.pending ?? 0)} pending` }))),
        attempts.length
          ? h('div', { class: 'table-scroll' }, h('table', { class: 'grid-table attempts' },
            h('thead', null, h('tr', null, ['When', 'Attempt', 'Status', 'Latency', 'Error'].map((c, i) => h('th', { text: c, class: i === 1 || i === 3 ? 'num' : '', attrs: { scope: 'col' } })))),
            h('tbody', null, attempts.map((a) => {
              const code = a.status_code;
              const ok = code >= 200 && code < 300;
              return h('tr', { testid: 'webhook-attempt' },
                h('td', { class: 'nowrap' }, relTime(a.at)),
                h('td', { class: 'num', text: fmtInt(a.attempt ?? 1) }),
                h('td', null, h('span', { class: `badge ${code === null || code === undefined ? 'bad' : ok ? 'good' : 'bad'}`, text: code === null || code === undefined ? 'no answer' : String(code) })),
                h('td', { class: 'num', text: a.latency_ms === null || a.latency_ms === undefined ? '—' : `${fmtInt(a.latency_ms)} ms` }),
                h('td', { class: 'error-text', title: a.error ?? '', text: a.error ?? '' }));
            }))))
          : h('p', { class: 'muted small', text: 'No delivery attempts yet.' }));
    }));
  }

  return {
    enter() { poller.start(); },
    leave() { poller.stop(); },
  };
})();

// ---------------------------------------------------------------------------------------------
// Start

function start() {
  initTheme();
  const bar = document.querySelector('.topbar');
  const setHeader = () => document.documentElement.style.setProperty('--header-h', `${bar.offsetHeight}px`);
  setHeader();
  if (window.ResizeObserver) new ResizeObserver(setHeader).observe(bar);
  window.addEventListener('hashchange', route);
  const { name, params } = parseHash();
  views.stream.start(name === 'stream' ? params : new URLSearchParams());
  route();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();
