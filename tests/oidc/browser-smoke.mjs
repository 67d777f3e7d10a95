// Proves the test provider and the browser driver together: Chromium (through browser.mjs,
// as the Rust tests drive it) signs a fresh test user in at the provider with the
// authorization code flow + PKCE, lands on a local redirect URI, and the code is exchanged
// for tokens whose ID token carries the user's claims.
//
//   node browser-smoke.mjs [SCREENSHOT_DIR]     (needs BERTH_TEST_OIDC_ISSUER and _ADMIN)
//
// Prints what it checks to stderr and, last, one JSON line on stdout:
//   {"result":"pass"|"fail","error"?:"...","claims":{...},"cookies":[...],"screenshots":[...]}
// Exit 0 only on pass. Everything is bounded: the whole run ends after 120 s.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import process from 'node:process';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const issuer = process.env.BERTH_TEST_OIDC_ISSUER;
const adminBase = process.env.BERTH_TEST_OIDC_ADMIN;
const shots = process.argv[2] ?? null;
const report = { result: 'fail', claims: null, cookies: null, screenshots: [] };

function note(...parts) {
  process.stderr.write(`browser-smoke: ${parts.join(' ')}\n`);
}

function check(cond, message) {
  if (!cond) throw new Error(message);
  note('ok:', message);
}

const deadline = setTimeout(() => {
  report.error = 'timed out after 120 s';
  process.stdout.write(`${JSON.stringify(report)}\n`);
  process.exit(1);
}, 120000);
deadline.unref();

async function adminCall(method, route, body) {
  const r = await fetch(`${adminBase}${route}`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10000),
  });
  const json = await r.json();
  if (!r.ok) throw new Error(`${method} ${route}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

function b64url(buf) {
  return Buffer.from(buf).toString('base64url');
}

// The browser driver, conversation style: one step written, one answer read.
function startBrowser(config) {
  const child = spawn(process.execPath, [path.join(here, 'browser.mjs'), JSON.stringify(config)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  async function nextAnswer() {
    for (;;) {
      const { value, done } = await lines.next();
      if (done) throw new Error('browser.mjs ended early');
      const msg = JSON.parse(value);
      if (msg.event) {
        note('browser event', value);
        continue;
      }
      return msg;
    }
  }
  return {
    async ready() {
      const msg = await nextAnswer();
      if (!msg.ready) throw new Error(`browser did not start: ${JSON.stringify(msg)}`);
      note('browser', msg.browser);
    },
    async step(step) {
      child.stdin.write(`${JSON.stringify(step)}\n`);
      const msg = await nextAnswer();
      if (!msg.ok) throw new Error(`step ${JSON.stringify(step)} failed: ${msg.error} at ${msg.url}`);
      return msg.value;
    },
    async close() {
      child.stdin.end();
      await new Promise((resolve) => {
        const t = setTimeout(() => {
          child.kill('SIGKILL');
          resolve();
        }, 15000);
        child.on('exit', () => {
          clearTimeout(t);
          resolve();
        });
      });
    },
  };
}

async function main() {
  check(issuer && adminBase, 'BERTH_TEST_OIDC_ISSUER and BERTH_TEST_OIDC_ADMIN are set (run through scripts/test.sh)');
  const discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  check(discovery.issuer === issuer, `discovery names the issuer ${issuer}`);

  // A redirect URI of our own: a listener that shows the code on a page.
  let received = null;
  const listener = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (url.pathname !== '/callback') {
      res.writeHead(404).end();
      return;
    }
    received = Object.fromEntries(url.searchParams);
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><title>callback</title><p id="code">${url.searchParams.get('code') ?? ''}</p>`);
  });
  await new Promise((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const redirectUri = `http://127.0.0.1:${listener.address().port}/callback`;

  const id = crypto.randomBytes(4).toString('hex');
  const clientId = `smoke-${id}`;
  const client = await adminCall('PUT', `/clients/${clientId}`, { redirect_uris: [redirectUri] });
  const username = `smoke-${id}`;
  const user = await adminCall('PUT', `/users/${username}`, { groups: ['smoke-group'] });

  const verifier = b64url(crypto.randomBytes(32));
  const challenge = b64url(crypto.createHash('sha256').update(verifier).digest());
  const state = b64url(crypto.randomBytes(12));
  const nonce = b64url(crypto.randomBytes(12));
  const auth = new URL(discovery.authorization_endpoint);
  for (const [k, v] of Object.entries({
    response_type: 'code', client_id: clientId, redirect_uri: redirectUri,
    scope: 'openid profile email groups offline_access', state, nonce,
    code_challenge: challenge, code_challenge_method: 'S256',
  })) auth.searchParams.set(k, v);

  const browser = startBrowser({ timeout_ms: 15000, max_seconds: 110, failure_screenshot_dir: shots ?? undefined });
  try {
    await browser.ready();
    await browser.step({ op: 'goto', url: auth.href });
    await browser.step({ op: 'wait_selector', selector: 'form#login' });
    if (shots) report.screenshots.push(await browser.step({ op: 'screenshot', path: path.join(shots, 'provider-login.png') }));
    await browser.step({ op: 'fill', selector: '#username', value: username });
    await browser.step({ op: 'fill', selector: '#password', value: 'wrong' });
    await browser.step({ op: 'click', selector: '#submit' });
    const error = await browser.step({ op: 'text', selector: '#error' });
    check(error === 'Invalid username or password', `a wrong password shows the form again with "${error}"`);
    await browser.step({ op: 'fill', selector: '#password', value: user.password });
    await browser.step({ op: 'click', selector: '#submit' });
    const landed = await browser.step({ op: 'wait_url', pattern: `^${redirectUri.replace(/[.?]/g, '\\$&')}\\?` });
    check(landed.startsWith(`${redirectUri}?`), `the browser lands on the redirect URI (${landed})`);
    const shownCode = await browser.step({ op: 'text', selector: '#code' });
    report.cookies = await browser.step({ op: 'cookies' });
    if (shots) report.screenshots.push(await browser.step({ op: 'screenshot', path: path.join(shots, 'callback.png') }));
    check(received && received.code === shownCode, 'the callback got the code the page shows');
    check(received.state === state, 'state comes back unchanged');
    check(received.iss === issuer, 'the iss parameter names the issuer');
  } finally {
    await browser.close();
    listener.close();
  }

  check(report.cookies.length > 0 && report.cookies.every((c) => c.name.startsWith('oidcop_')),
    `the provider's cookies are all oidcop_* (${report.cookies.map((c) => c.name).join(', ')})`);
  check(report.cookies.every((c) => c.httpOnly && c.sameSite === 'Lax'), 'they are HttpOnly and SameSite=Lax');

  const tokenResponse = await fetch(discovery.token_endpoint, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${clientId}:${client.client_secret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ grant_type: 'authorization_code', code: received.code, redirect_uri: redirectUri, code_verifier: verifier }),
    signal: AbortSignal.timeout(10000),
  });
  const tokens = await tokenResponse.json();
  check(tokenResponse.status === 200, `the code exchange answers 200 (${JSON.stringify(tokens).slice(0, 200)})`);
  check(typeof tokens.refresh_token === 'string', 'a refresh token is issued');
  const claims = JSON.parse(Buffer.from(tokens.id_token.split('.')[1], 'base64url').toString());
  report.claims = claims;
  check(claims.iss === issuer && claims.aud === clientId && claims.nonce === nonce, 'iss, aud and nonce are right');
  check(claims.sub === user.sub && claims.email === user.email && claims.email_verified === true,
    `sub ${claims.sub} and the verified email are the user's`);
  check(claims.preferred_username === username && JSON.stringify(claims.groups) === '["smoke-group"]',
    'preferred_username and groups are the user\'s');
  await adminCall('DELETE', `/users/${username}`);
  report.result = 'pass';
}

try {
  await main();
} catch (err) {
  report.error = err.message;
  note('FAIL:', err.message);
}
process.stdout.write(`${JSON.stringify(report)}\n`);
process.exit(report.result === 'pass' ? 0 : 1);
