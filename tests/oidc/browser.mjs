// A Chromium that tests drive with JSON lines: Playwright (playwright-core) on Debian's
// chromium, a fresh profile per process (deleted on exit), one page.
//
//   node browser.mjs ['{"timeout_ms":15000, ...config}']
//
// Reads steps from stdin, one JSON object per line, and answers each with one JSON line on
// stdout, in order. A test may write every step and close stdin (a script), or write one,
// read its answer, do something else (podman login with a secret read from the page) and
// write the next (a conversation). EOF on stdin (or {"op":"close"}) closes the browser.
//
// First line out, once the browser is up: {"ready":true,"browser":"<its User-Agent>"}.
// Then for each step: {"i":N,"op":"...","ok":true,"value":...,"url":"<page url after>"}
// or {"i":N,"op":"...","ok":false,"error":"...","url":"...","screenshot":"<path>"|null}.
// Other lines, interleaved: {"event":"dialog","type":"confirm","message":"..."} (dialogs are
// accepted unless config says otherwise), {"event":"pageerror","message":"..."} (uncaught
// exceptions in the page), {"event":"console","type":"error","text":"...","source":"<url>"}.
// After a failed step the process stops (exit 1) unless config.stop_on_error is false; the
// last line is then {"done":true,"ok":false}. A clean end prints {"done":true,"ok":true}.
//
// Config (the optional JSON argument; every field optional):
//   executable        chromium binary (default $BERTH_TEST_CHROMIUM or /usr/bin/chromium)
//   timeout_ms        per-step timeout (default 15000)
//   max_seconds       the whole process ends after this, whatever it is doing (default 600)
//   base_url          relative URLs in goto / wait_url are resolved against it
//   javascript        false: pages run without JavaScript (default true)
//   viewport          {"width":1280,"height":900}
//   failure_screenshot_dir  a full-page PNG of the page is written there when a step fails
//   stop_on_error     default true
//   accept_dialogs    default true (false: dismiss)
//   permissions       e.g. ["clipboard-read","clipboard-write"] (granted to every origin)
//
// Steps ({"op": ..., fields}); selectors are Playwright selectors (CSS, text=..., #id, ...);
// every step takes an optional timeout_ms:
//   goto {url}                        navigate; value: the HTTP status of the response
//   click {selector}                  click (waits for the element; a navigation it starts is
//                                     not awaited: follow with wait_url / wait_selector)
//   fill {selector, value}            type into an input
//   press {selector, key}             e.g. "Enter"
//   select {selector, value}          choose an <option> by value or label
//   check {selector} / uncheck {selector}
//   wait_url {url | pattern}          until the page URL equals url, or matches the regular
//                                     expression `pattern`; value: the URL
//   wait_selector {selector, state?}  state: attached | detached | visible (default) | hidden
//   text {selector}                   value: innerText of the first match
//   texts {selector}                  value: innerText of every match (may be [])
//   attr {selector, name}             value: that attribute of the first match (or null)
//   value {selector}                  value: an input's current value
//   count {selector}                  value: how many elements match (no waiting)
//   url / title / html                value: page URL / title / whole HTML
//   eval {expression}                 value: the JSON result of a JavaScript expression
//   clipboard                         value: the clipboard text (needs permissions above)
//   cookies {url?}                    value: [{name,value,domain,path,expires,httpOnly,secure,
//                                     sameSite}] for url (default: every cookie)
//   screenshot {path, full_page?}     PNG (full_page default true); value: the path
//   wait_ms {ms}                      sleep (at most 30000)
//   close                             end now
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import process from 'node:process';
import readline from 'node:readline';

import { chromium } from 'playwright-core';

let config = {};
if (process.argv[2]) {
  try {
    config = JSON.parse(process.argv[2]);
  } catch (err) {
    process.stderr.write(`browser.mjs: the argument is not JSON: ${err.message}\n`);
    process.exit(2);
  }
}

const executable = config.executable ?? process.env.BERTH_TEST_CHROMIUM ?? '/usr/bin/chromium';
const defaultTimeout = config.timeout_ms ?? 15000;
const stopOnError = config.stop_on_error ?? true;

function out(value) {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-chromium-'));
let context;
let exiting = false;

async function finish(code) {
  if (exiting) return;
  exiting = true;
  try {
    if (context) await Promise.race([context.close(), new Promise((r) => setTimeout(r, 10000))]);
  } catch {
    // The browser may already be gone.
  }
  fs.rmSync(profile, { recursive: true, force: true });
  process.exit(code);
}

const watchdog = setTimeout(() => {
  out({ done: true, ok: false, error: `browser.mjs ran longer than max_seconds` });
  finish(1);
}, (config.max_seconds ?? 600) * 1000);
watchdog.unref();
process.on('SIGTERM', () => finish(143));
process.on('SIGINT', () => finish(130));

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: executable,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage',
    ],
    javaScriptEnabled: config.javascript ?? true,
    viewport: config.viewport ?? { width: 1280, height: 900 },
    timeout: 60000,
  });
} catch (err) {
  out({ ready: false, error: `could not start ${executable}: ${err.message}` });
  await finish(1);
}
if (config.permissions) await context.grantPermissions(config.permissions);
context.setDefaultTimeout(defaultTimeout);
context.setDefaultNavigationTimeout(defaultTimeout);
const page = context.pages()[0] ?? (await context.newPage());

page.on('dialog', (dialog) => {
  out({ event: 'dialog', type: dialog.type(), message: dialog.message() });
  (config.accept_dialogs ?? true ? dialog.accept() : dialog.dismiss()).catch(() => {});
});
page.on('pageerror', (err) => out({ event: 'pageerror', message: err.message }));
page.on('console', (msg) => {
  if (msg.type() === 'error') out({ event: 'console', type: 'error', text: msg.text(), source: msg.location().url ?? null });
});

out({ ready: true, browser: await page.evaluate('navigator.userAgent').catch(() => null) });

function absolute(url) {
  return config.base_url ? new URL(url, config.base_url).href : url;
}

function need(step, field) {
  if (step[field] === undefined) throw new Error(`step ${step.op} needs "${field}"`);
  return step[field];
}

async function run(step) {
  const timeout = step.timeout_ms ?? defaultTimeout;
  const sel = () => page.locator(need(step, 'selector')).first();
  switch (step.op) {
    case 'goto': {
      const response = await page.goto(absolute(need(step, 'url')), { timeout });
      return response ? response.status() : null;
    }
    case 'click':
      await sel().click({ timeout });
      return null;
    case 'fill':
      await sel().fill(String(need(step, 'value')), { timeout });
      return null;
    case 'press':
      await sel().press(need(step, 'key'), { timeout });
      return null;
    case 'select':
      return sel().selectOption(String(need(step, 'value')), { timeout });
    case 'check':
      await sel().check({ timeout });
      return null;
    case 'uncheck':
      await sel().uncheck({ timeout });
      return null;
    case 'wait_url': {
      const target = step.url !== undefined ? absolute(step.url) : new RegExp(need(step, 'pattern'));
      await page.waitForURL(target, { timeout, waitUntil: 'load' });
      return page.url();
    }
    case 'wait_selector':
      await page.locator(need(step, 'selector')).first().waitFor({ state: step.state ?? 'visible', timeout });
      return null;
    case 'text':
      return sel().innerText({ timeout });
    case 'texts':
      return page.locator(need(step, 'selector')).allInnerTexts();
    case 'attr':
      return sel().getAttribute(need(step, 'name'), { timeout });
    case 'value':
      return sel().inputValue({ timeout });
    case 'count':
      return page.locator(need(step, 'selector')).count();
    case 'url':
      return page.url();
    case 'title':
      return page.title();
    case 'html':
      return page.content();
    case 'eval':
      return page.evaluate(need(step, 'expression'));
    case 'clipboard':
      return page.evaluate('navigator.clipboard.readText()');
    case 'cookies': {
      const cookies = await context.cookies(step.url ? [absolute(step.url)] : []);
      return cookies.map(({ name, value, domain, path: p, expires, httpOnly, secure, sameSite }) => ({
        name, value, domain, path: p, expires, httpOnly, secure, sameSite,
      }));
    }
    case 'screenshot': {
      const file = need(step, 'path');
      fs.mkdirSync(path.dirname(file), { recursive: true });
      await page.screenshot({ path: file, fullPage: step.full_page ?? true, timeout });
      return file;
    }
    case 'wait_ms':
      await new Promise((r) => setTimeout(r, Math.min(Number(step.ms) || 0, 30000)));
      return null;
    default:
      throw new Error(`unknown op ${JSON.stringify(step.op)}`);
  }
}

async function failureScreenshot(i) {
  if (!config.failure_screenshot_dir) return null;
  const file = path.join(config.failure_screenshot_dir, `failed-step-${i}.png`);
  try {
    fs.mkdirSync(config.failure_screenshot_dir, { recursive: true });
    await page.screenshot({ path: file, fullPage: true, timeout: 5000 });
    return file;
  } catch {
    return null;
  }
}

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
let i = 0;
let failed = false;
for await (const line of lines) {
  if (!line.trim()) continue;
  let step;
  try {
    step = JSON.parse(line);
  } catch (err) {
    step = { op: null, parseError: err.message };
  }
  if (step.op === 'close') break;
  const n = i;
  i += 1;
  try {
    if (step.parseError) throw new Error(`not JSON: ${step.parseError}`);
    const value = await run(step);
    out({ i: n, op: step.op, ok: true, value: value ?? null, url: page.url() });
  } catch (err) {
    failed = true;
    const screenshot = await failureScreenshot(n);
    out({ i: n, op: step.op, ok: false, error: err.message.split('\n')[0], detail: err.message, url: page.url(), screenshot });
    if (stopOnError) break;
  }
}
out({ done: true, ok: !failed });
await finish(failed ? 1 : 0);
