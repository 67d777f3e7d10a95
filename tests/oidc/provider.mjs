// Berth's test OpenID Connect provider: the npm package `oidc-provider` (a certified OP) with
// test users, a login form a browser or a plain HTTP client can fill, and admin routes that let
// a test change what the provider says (a user's `sub`, groups, ...), revoke grants, register
// clients and mint ID tokens. scripts/test.sh starts one per run; tests must not assume they
// are alone on it (make users and clients with unique names through the admin routes).
//
// Start:  node provider.mjs [--port N]            (or OIDC_PORT; 0 / unset: a free port)
// Prints one JSON line on stdout once it listens, then logs to stderr only:
//   {"issuer":"http://127.0.0.1:PORT","admin":"http://127.0.0.1:PORT/__test",
//    "client_id":"berth","client_secret":"...","redirect_uris":[...]}
// Environment (all optional):
//   OIDC_CLIENT_ID        the default client's id          (default "berth")
//   OIDC_CLIENT_SECRET    its secret                       (default "berth-test-secret")
//   OIDC_REDIRECT_URIS    space/comma separated redirect URIs
//                         (default http://127.0.0.1/c/oidc/callback; the default client is a
//                         "native" client, so any port on a loopback redirect URI is accepted:
//                         http://127.0.0.1:ANYPORT/c/oidc/callback works without registering)
//   OIDC_ADMIN_PREFIX     path prefix of the admin routes  (default "/__test")
//
// The protocol, as an OpenID Connect relying party sees it:
// - Discovery at ISSUER/.well-known/openid-configuration; keys (one RSA key, RS256, generated
//   at start) at ISSUER/jwks. Authorization code flow only; PKCE (S256) is required for every
//   client. Token endpoint auth: client_secret_basic (per client: see PUT clients below).
// - Scopes: openid profile email groups offline_access. Claims: sub (openid); email,
//   email_verified (email); name, preferred_username (profile); groups (groups). They are in
//   the ID token (not only in userinfo) and at the userinfo endpoint.
// - Refresh tokens are issued on every code exchange whether or not offline_access was asked
//   for (like Keycloak; without this oidc-provider drops offline_access unless prompt=consent),
//   and they do not end with the provider's browser session. PUT settings can turn them off.
// - Login: the authorization endpoint redirects to /interaction/UID, a plain HTML form:
//     <form id="login" method="post" action="/interaction/UID/login">
//       <input name="username" id="username"> <input name="password" id="password" type="password">
//       <button type="submit" id="submit">Sign in</button></form>
//   and a link #cancel (/interaction/UID/abort: the RP gets error=access_denied). A wrong
//   password answers 200 with the form again and <p id="error">Invalid username or password</p>.
//   Consent is granted automatically (one more redirect through /interaction/UID).
//   A second authorization request from the same browser signs in silently (provider session).
// - Cookies: oidcop_session, oidcop_interaction, oidcop_resume (never Berth's berth_* names),
//   HttpOnly, SameSite=Lax, not Secure (plain http).
// - Users (username / password / sub / email / groups): alice / alice-password / sub-alice /
//   alice@example.com / [berth-admins, developers]; bob / bob-password / sub-bob /
//   bob@example.com / [developers]; carol / carol-password / sub-carol / carol@example.com
//   (email_verified false) / []. name is "Alice Example" etc., preferred_username the username.
//   Sign-in is by username, or by email.
//
// Admin routes (JSON in and out, loopback peers only, no auth) under ISSUER/__test:
//   GET    /health                          {"ok":true}
//   GET    /callback?...                    a redirect URI for tests without a relying party:
//                                           an HTML page showing each query parameter as
//                                           <dd id="NAME">VALUE</dd> (#code, #state, #iss, #error)
//   GET    /users                           [user, ...]
//   PUT    /users/NAME   {fields}           create or change a user; fields: password, sub, email,
//                                           email_verified, name, preferred_username, groups
//                                           (null removes a claim). A new user gets password
//                                           "NAME-password", sub "sub-NAME", email
//                                           NAME@example.com (verified), no groups. Changing sub
//                                           simulates a redeployed provider: everything issued
//                                           to the old sub (sessions, grants, codes, access and
//                                           refresh tokens) is deleted. Answers the user.
//   DELETE /users/NAME                      remove the user and everything issued to them
//   POST   /users/NAME/revoke {"sessions":bool}
//                                           delete the user's grants and every code, access and
//                                           refresh token (so refresh_token grants answer
//                                           invalid_grant); with sessions:true also the
//                                           provider's browser sessions (next login shows the
//                                           form). Answers {"revoked":{"Grant":n,...}}
//   GET    /issued?username=NAME            what is stored for a user (or everyone):
//                                           [{"kind":"RefreshToken","account":sub,"client":id,
//                                             "expires_at":epoch}, ...]
//   GET    /clients                         [client metadata, ...]
//   PUT    /clients/ID   {metadata}         register or replace a client: OpenID Connect client
//                                           metadata (redirect_uris required; client_secret,
//                                           token_endpoint_auth_method, application_type,
//                                           ... as in RFC 7591). Defaults: grant_types
//                                           authorization_code + refresh_token, response_types
//                                           code, client_secret "ID-secret". Answers it.
//   POST   /tls {"cert":PEM,"key":PEM}      start a second issuer over HTTPS with that
//                                           certificate (same users, clients and grants);
//                                           answers {"issuer":"https://127.0.0.1:P","admin":...}
//   PUT    /settings {..}                   access_token_ttl, id_token_ttl, refresh_token_ttl
//                                           (seconds), issue_refresh_tokens (bool); answers all.
//   POST   /id-token {..}                   mint an ID token without a login, for bearer-token
//                                           tests: username (claims from that user), client_id
//                                           (aud, default the default client), claims (merged
//                                           over, e.g. {"iss":"http://elsewhere"}), expires_in
//                                           (seconds, may be negative), key: "provider" (the
//                                           published key, default) or "unknown" (a key not
//                                           in the JWKS). Answers {"id_token":"..."}.
// Errors answer 4xx with {"error":"..."}.

import crypto from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import process from 'node:process';

import Provider from 'oidc-provider';

const args = process.argv.slice(2);
function argValue(name) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

const PORT = Number(argValue('--port') ?? process.env.OIDC_PORT ?? 0);
const CLIENT_ID = process.env.OIDC_CLIENT_ID || 'berth';
const CLIENT_SECRET = process.env.OIDC_CLIENT_SECRET || 'berth-test-secret';
const REDIRECT_URIS = (process.env.OIDC_REDIRECT_URIS || 'http://127.0.0.1/c/oidc/callback')
  .split(/[\s,]+/)
  .filter(Boolean);
const ADMIN = (process.env.OIDC_ADMIN_PREFIX || '/__test').replace(/\/+$/, '');

function log(...parts) {
  process.stderr.write(`[oidc ${new Date().toISOString()}] ${parts.join(' ')}\n`);
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------
const users = new Map(); // username -> user
// Subjects a user had before a sub change: their artifacts are revoked with the user's.
const formerSubs = new Map(); // username -> Set of subs

function newUser(username, fields = {}) {
  const user = {
    username,
    password: `${username}-password`,
    sub: `sub-${username}`,
    email: `${username}@example.com`,
    email_verified: true,
    name: `${username.charAt(0).toUpperCase()}${username.slice(1)} Example`,
    preferred_username: username,
    groups: [],
  };
  return applyFields(user, fields);
}

const USER_FIELDS = ['password', 'sub', 'email', 'email_verified', 'name', 'preferred_username', 'groups'];

function applyFields(user, fields) {
  for (const [k, v] of Object.entries(fields)) {
    if (!USER_FIELDS.includes(k)) throw new AdminError(400, `unknown user field ${k}`);
    if ((k === 'sub' || k === 'password') && (typeof v !== 'string' || !v)) {
      throw new AdminError(400, `${k} must be a non-empty string`);
    }
    if (k === 'groups' && v !== null && !(Array.isArray(v) && v.every((g) => typeof g === 'string'))) {
      throw new AdminError(400, 'groups must be a list of strings or null');
    }
    if (v === null) delete user[k];
    else user[k] = v;
  }
  return user;
}

for (const [name, groups, verified] of [
  ['alice', ['berth-admins', 'developers'], true],
  ['bob', ['developers'], true],
  ['carol', [], false],
]) {
  users.set(name, newUser(name, { groups, email_verified: verified }));
}

function userBySub(sub) {
  for (const u of users.values()) if (u.sub === sub) return u;
  return undefined;
}

function userByLogin(login) {
  if (users.has(login)) return users.get(login);
  for (const u of users.values()) if (u.email && u.email === login) return u;
  return undefined;
}

function subsOf(username) {
  const subs = new Set(formerSubs.get(username) ?? []);
  const u = users.get(username);
  if (u) subs.add(u.sub);
  return subs;
}

// ---------------------------------------------------------------------------------------------
// Storage: an in-memory adapter that the admin routes can search by account.
// ---------------------------------------------------------------------------------------------
const store = new Map(); // `${model}:${id}` -> { model, id, payload, expiresAt (ms) | undefined }
let upserts = 0;

function live(entry) {
  return entry && (entry.expiresAt === undefined || entry.expiresAt > Date.now());
}

function sweep() {
  for (const [key, entry] of store) if (!live(entry)) store.delete(key);
}

class TestAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    upserts += 1;
    if (upserts % 200 === 0) sweep();
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    store.set(this.key(id), { model: this.model, id, payload, expiresAt });
  }

  async find(id) {
    const entry = store.get(this.key(id));
    return live(entry) ? entry.payload : undefined;
  }

  async findByUid(uid) {
    for (const entry of store.values()) {
      if (entry.model === this.model && entry.payload.uid === uid && live(entry)) return entry.payload;
    }
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const entry of store.values()) {
      if (entry.model === this.model && entry.payload.userCode === userCode && live(entry)) {
        return entry.payload;
      }
    }
    return undefined;
  }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const [key, entry] of store) if (entry.payload.grantId === grantId) store.delete(key);
  }
}

const ISSUED_KINDS = ['Session', 'Grant', 'AuthorizationCode', 'AccessToken', 'RefreshToken'];

// Deletes what was issued to any of `subs`; `kinds` limits it. Returns counts per kind.
function deleteIssued(subs, kinds) {
  const counts = {};
  for (const kind of kinds) counts[kind] = 0;
  for (const [key, entry] of store) {
    if (kinds.includes(entry.model) && subs.has(entry.payload.accountId)) {
      store.delete(key);
      counts[entry.model] += 1;
    }
  }
  return counts;
}

// ---------------------------------------------------------------------------------------------
// Settings the admin routes can change at run time.
// ---------------------------------------------------------------------------------------------
const settings = {
  access_token_ttl: 3600,
  id_token_ttl: 3600,
  refresh_token_ttl: 14 * 24 * 3600,
  issue_refresh_tokens: true,
};

// ---------------------------------------------------------------------------------------------
// The HTTP server: listen first (the issuer names the port), then build the provider.
// ---------------------------------------------------------------------------------------------
const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(PORT, '127.0.0.1', resolve);
});
const ISSUER = `http://127.0.0.1:${server.address().port}`;

const signingKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
const signingJwk = { ...signingKey.export({ format: 'jwk' }), kid: `test-${crypto.randomUUID()}`, alg: 'RS256', use: 'sig' };
// A key that is not in the JWKS, for "signed with an unknown key" tests.
const unknownKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;

function makeProvider(issuer) {
const provider = new Provider(issuer, {
  adapter: TestAdapter,
  async findAccount(_ctx, sub) {
    const user = userBySub(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        return claimsOf(user);
      },
    };
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  jwks: { keys: [signingJwk] },
  cookies: {
    names: { session: 'oidcop_session', interaction: 'oidcop_interaction', resume: 'oidcop_resume' },
    keys: [crypto.randomBytes(32).toString('hex')],
  },
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    introspection: { enabled: true },
  },
  interactions: {
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  issueRefreshToken: async (_ctx, client) =>
    settings.issue_refresh_tokens && client.grantTypeAllowed('refresh_token'),
  expiresWithSession: async () => false,
  clientBasedCORS: () => true,
  ttl: {
    AccessToken: () => settings.access_token_ttl,
    AuthorizationCode: 60,
    IdToken: () => settings.id_token_ttl,
    RefreshToken: () => settings.refresh_token_ttl,
    Grant: 14 * 24 * 3600,
    Interaction: 3600,
    Session: 14 * 24 * 3600,
  },
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<h1>Error</h1><pre id="error">${esc(JSON.stringify(out, null, 2))}</pre>`);
  },
});
provider.on('server_error', (_ctx, err) => log('server_error', err.stack ?? err));
provider.on('grant.error', (_ctx, err) => log('grant.error', err.message, err.error_description ?? ''));
provider.on('authorization.error', (_ctx, err) => log('authorization.error', err.message, err.error_description ?? ''));
return provider;
}
const provider = makeProvider(ISSUER);

function claimsOf(user) {
  const claims = { sub: user.sub };
  for (const k of ['email', 'email_verified', 'name', 'preferred_username', 'groups']) {
    if (user[k] !== undefined) claims[k] = user[k];
  }
  return claims;
}

// Clients live in the adapter, so the admin route can replace them (oidc-provider prefers
// clients from its configuration and would never let those change).
function clientMetadata(id, fields) {
  return {
    client_id: id,
    client_secret: `${id}-secret`,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...fields,
  };
}

async function putClient(id, fields) {
  const metadata = clientMetadata(id, fields);
  try {
    await provider.Client.validate(metadata);
  } catch (err) {
    throw new AdminError(400, `invalid client metadata: ${err.error_description ?? err.message}`);
  }
  await new TestAdapter('Client').upsert(id, metadata);
  return metadata;
}

await putClient(CLIENT_ID, {
  client_secret: CLIENT_SECRET,
  redirect_uris: REDIRECT_URIS,
  application_type: 'native',
});

// ---------------------------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------------------------
function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head>` +
    `<body>${body}</body></html>`;
}

function loginPage(uid, clientId, error, username = '') {
  return page('Sign in - test provider', `<h1>Test provider: sign in to ${esc(clientId)}</h1>` +
    (error ? `<p id="error">${esc(error)}</p>` : '') +
    `<form id="login" method="post" action="/interaction/${esc(uid)}/login">` +
    `<label>Username <input name="username" id="username" value="${esc(username)}" autofocus></label>` +
    `<label>Password <input name="password" id="password" type="password"></label>` +
    `<button type="submit" id="submit">Sign in</button></form>` +
    `<p><a id="cancel" href="/interaction/${esc(uid)}/abort">Cancel</a></p>`);
}

// ---------------------------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------------------------
class AdminError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const MAX_BODY = 1 << 20;
async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) throw new AdminError(413, 'body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function readJson(req) {
  const text = await readBody(req);
  if (!text.trim()) return {};
  try {
    const value = JSON.parse(text);
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('not an object');
    return value;
  } catch (err) {
    throw new AdminError(400, `body is not a JSON object: ${err.message}`);
  }
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

function sendJson(res, status, value) {
  send(res, status, 'application/json', `${JSON.stringify(value)}\n`);
}

async function interaction(provider, req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new AdminError(400, 'interaction mismatch');
  const { prompt, params } = details;

  if (action === 'abort') {
    log('interaction abort', uid);
    await provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'the user cancelled the sign-in',
    }, { mergeWithLastSubmission: false });
    return;
  }

  if (prompt.name === 'login') {
    if (action === 'login' && req.method === 'POST') {
      const form = new URLSearchParams(await readBody(req));
      const login = form.get('username') ?? '';
      const user = userByLogin(login);
      if (!user || user.password !== (form.get('password') ?? '')) {
        log('login refused', JSON.stringify(login));
        send(res, 200, 'text/html; charset=utf-8', loginPage(uid, params.client_id, 'Invalid username or password', login));
        return;
      }
      log('login', user.username, user.sub);
      await provider.interactionFinished(req, res, { login: { accountId: user.sub } }, {
        mergeWithLastSubmission: false,
      });
      return;
    }
    send(res, 200, 'text/html; charset=utf-8', loginPage(uid, params.client_id));
    return;
  }

  if (prompt.name === 'consent') {
    // Granted without asking: everything the client asked for.
    const { accountId } = details.session;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    log('consent', accountId, params.client_id, params.scope ?? '');
    await provider.interactionFinished(req, res, details.grantId ? {} : { consent: { grantId } }, {
      mergeWithLastSubmission: true,
    });
    return;
  }

  throw new AdminError(400, `unexpected prompt ${prompt.name}`);
}

function b64url(data) {
  return Buffer.from(data).toString('base64url');
}

function mintIdToken(body) {
  const clientId = body.client_id ?? CLIENT_ID;
  const now = Math.floor(Date.now() / 1000);
  let claims = { iss: ISSUER, aud: clientId, iat: now, exp: now + Number(body.expires_in ?? 300) };
  if (body.username !== undefined) {
    const user = users.get(body.username);
    if (!user) throw new AdminError(404, `no user ${body.username}`);
    claims = { ...claims, ...claimsOf(user) };
  }
  claims = { ...claims, ...(body.claims ?? {}) };
  const key = body.key ?? 'provider';
  if (key !== 'provider' && key !== 'unknown') throw new AdminError(400, 'key must be "provider" or "unknown"');
  const header = { alg: 'RS256', typ: 'JWT', kid: key === 'provider' ? signingJwk.kid : `unknown-${crypto.randomUUID()}` };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const signature = crypto.sign('sha256', Buffer.from(input), key === 'provider' ? signingKey : unknownKey);
  return `${input}.${b64url(signature)}`;
}

function isLoopback(address) {
  return address === '127.0.0.1' || address === '::1' || address === '::ffff:127.0.0.1';
}

async function admin(req, res, path, query) {
  if (!isLoopback(req.socket.remoteAddress)) throw new AdminError(403, 'admin routes answer loopback peers only');
  const m = req.method;
  let match;
  if (m === 'GET' && path === '/health') return sendJson(res, 200, { ok: true });
  if (m === 'GET' && path === '/callback') {
    const items = [...query].map(([k, v]) => `<dt>${esc(k)}</dt><dd id="${esc(k)}">${esc(v)}</dd>`).join('');
    return send(res, 200, 'text/html; charset=utf-8', page('Callback', `<h1>Callback</h1><dl>${items}</dl>`));
  }
  if (m === 'GET' && path === '/users') return sendJson(res, 200, [...users.values()]);
  if ((match = path.match(/^\/users\/([^/]+)$/))) {
    const username = decodeURIComponent(match[1]);
    if (m === 'PUT') {
      const fields = await readJson(req);
      const existing = users.get(username);
      if (!existing) {
        const user = newUser(username, fields);
        if (userBySub(user.sub)) throw new AdminError(409, `sub ${user.sub} belongs to another user`);
        users.set(username, user);
        log('admin: user created', username, user.sub);
        return sendJson(res, 201, user);
      }
      const changed = applyFields({ ...existing }, fields);
      const other = userBySub(changed.sub);
      if (other && other.username !== username) throw new AdminError(409, `sub ${changed.sub} belongs to ${other.username}`);
      if (changed.sub !== existing.sub) {
        const counts = deleteIssued(new Set([existing.sub]), ISSUED_KINDS);
        if (!formerSubs.has(username)) formerSubs.set(username, new Set());
        formerSubs.get(username).add(existing.sub);
        log('admin: sub changed', username, existing.sub, '->', changed.sub, JSON.stringify(counts));
      }
      users.set(username, changed);
      return sendJson(res, 200, changed);
    }
    if (m === 'DELETE') {
      if (!users.has(username)) throw new AdminError(404, `no user ${username}`);
      const counts = deleteIssued(subsOf(username), ISSUED_KINDS);
      users.delete(username);
      log('admin: user deleted', username, JSON.stringify(counts));
      return sendJson(res, 200, { deleted: username, revoked: counts });
    }
  }
  if (m === 'POST' && (match = path.match(/^\/users\/([^/]+)\/revoke$/))) {
    const username = decodeURIComponent(match[1]);
    if (!users.has(username)) throw new AdminError(404, `no user ${username}`);
    const body = await readJson(req);
    const kinds = ISSUED_KINDS.filter((k) => k !== 'Session' || body.sessions === true);
    const counts = deleteIssued(subsOf(username), kinds);
    log('admin: revoked', username, JSON.stringify(counts));
    return sendJson(res, 200, { revoked: counts });
  }
  if (m === 'GET' && path === '/issued') {
    const username = query.get('username');
    if (username !== null && !users.has(username)) throw new AdminError(404, `no user ${username}`);
    const subs = username === null ? null : subsOf(username);
    const out = [];
    for (const entry of store.values()) {
      if (!ISSUED_KINDS.includes(entry.model) || !live(entry)) continue;
      if (subs && !subs.has(entry.payload.accountId)) continue;
      out.push({
        kind: entry.model,
        account: entry.payload.accountId,
        client: entry.payload.clientId ?? null,
        expires_at: entry.expiresAt === undefined ? null : Math.floor(entry.expiresAt / 1000),
        consumed: entry.payload.consumed !== undefined,
      });
    }
    return sendJson(res, 200, out);
  }
  if (m === 'GET' && path === '/clients') {
    const out = [];
    for (const entry of store.values()) if (entry.model === 'Client') out.push(entry.payload);
    return sendJson(res, 200, out);
  }
  if (m === 'PUT' && (match = path.match(/^\/clients\/([^/]+)$/))) {
    const id = decodeURIComponent(match[1]);
    const metadata = await putClient(id, await readJson(req));
    log('admin: client', id, JSON.stringify(metadata.redirect_uris));
    return sendJson(res, 200, metadata);
  }
  if (m === 'PUT' && path === '/settings') {
    const body = await readJson(req);
    for (const [k, v] of Object.entries(body)) {
      if (!(k in settings)) throw new AdminError(400, `unknown setting ${k}`);
      if (typeof v !== typeof settings[k]) throw new AdminError(400, `${k} must be a ${typeof settings[k]}`);
      settings[k] = v;
    }
    log('admin: settings', JSON.stringify(settings));
    return sendJson(res, 200, settings);
  }
  if (m === 'POST' && path === '/id-token') {
    return sendJson(res, 200, { id_token: mintIdToken(await readJson(req)) });
  }
  if (m === 'POST' && path === '/tls') {
    const body = await readJson(req);
    if (typeof body.cert !== 'string' || typeof body.key !== 'string') throw new AdminError(400, 'cert and key (PEM) are needed');
    return sendJson(res, 200, await startTls(body.cert, body.key));
  }
  throw new AdminError(404, `no admin route ${m} ${path}`);
}

// One handler per issuer: the admin routes, the login form, then the provider itself.
function handlerFor(instance, issuer) {
const providerHandler = instance.callback();
return async (req, res) => {
  const url = new URL(req.url, issuer);
  try {
    if (url.pathname === ADMIN || url.pathname.startsWith(`${ADMIN}/`)) {
      await admin(req, res, url.pathname.slice(ADMIN.length) || '/', url.searchParams);
      return;
    }
    if (url.pathname === '/favicon.ico') {
      // Keeps browsers' automatic favicon request out of the console errors tests look at.
      res.writeHead(204).end();
      return;
    }
    const m = url.pathname.match(/^\/interaction\/([^/]+)(?:\/(login|abort))?$/);
    if (m) {
      await interaction(instance, req, res, m[1], m[2]);
      return;
    }
    providerHandler(req, res);
  } catch (err) {
    const status = err instanceof AdminError ? err.status : 400;
    if (!(err instanceof AdminError)) log('error', req.method, url.pathname, err.stack ?? err);
    if (res.headersSent) {
      res.end();
    } else {
      sendJson(res, status, { error: err.message });
    }
  }
};
}
server.on('request', handlerFor(provider, ISSUER));

// A second issuer at https://127.0.0.1:PORT with the certificate and key a test gives (PEM),
// sharing users, clients and everything issued: for relying parties that must trust a
// private CA. Started by POST ADMIN/tls; answers {"issuer": ..., "admin": ...}.
async function startTls(cert, key) {
  const tls = https.createServer({ cert, key });
  await new Promise((resolve, reject) => {
    tls.once('error', reject);
    tls.listen(0, '127.0.0.1', resolve);
  });
  const issuer = `https://127.0.0.1:${tls.address().port}`;
  tls.on('request', handlerFor(makeProvider(issuer), issuer));
  log('listening', issuer);
  return { issuer, admin: `${issuer}${ADMIN}` };
}

// Everything is in memory: nothing to flush.
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

process.stdout.write(`${JSON.stringify({
  issuer: ISSUER,
  admin: `${ISSUER}${ADMIN}`,
  client_id: CLIENT_ID,
  client_secret: CLIENT_SECRET,
  redirect_uris: REDIRECT_URIS,
})}\n`);
log('listening', ISSUER);
