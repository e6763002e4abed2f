// Minimal, non-interactive OpenID Connect provider for end-to-end tests.
//
// Built on panva's `oidc-provider` (see package.json for the pinned version).
// Install once with `npm ci --prefix tests/oidc`, then start it with
// `node tests/oidc/provider.mjs`.
//
// Environment:
//   OIDC_PORT           port to bind on 127.0.0.1 (default 0 = any free port)
//   OIDC_CLIENT_ID      client id            (default "test-client")
//   OIDC_CLIENT_SECRET  client secret        (default "test-secret")
//   OIDC_REDIRECT_URI   registered redirect  (default "http://127.0.0.1:9/callback")
//   OIDC_EXIT_ON_STDIN_EOF  "0" disables exiting when stdin closes (default on)
//
// Once listening it prints exactly one line to stdout:
//   OIDC_ISSUER=http://127.0.0.1:<port>
// Everything else goes to stderr.
//
// Behaviour: there is no HTML. When the user agent reaches the interaction
// URL, login and consent are completed automatically. The account is taken
// from the `login_hint` authorization parameter (an e-mail address); without
// it the interaction answers 400. Claims for <email>:
//   sub = "sub-<email>", email = <email>, name = local part of <email>,
//   email_verified = true unless the local part starts with "unverified".
// PKCE (S256) is required; ID tokens are RS256-signed with a key generated at
// start-up and carry email / email_verified / name next to nonce.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';

import Provider, { interactionPolicy } from 'oidc-provider';

const PORT = Number.parseInt(process.env.OIDC_PORT ?? '0', 10) || 0;
const CLIENT_ID = process.env.OIDC_CLIENT_ID || 'test-client';
const CLIENT_SECRET = process.env.OIDC_CLIENT_SECRET || 'test-secret';
const REDIRECT_URI = process.env.OIDC_REDIRECT_URI || 'http://127.0.0.1:9/callback';
const HOST = '127.0.0.1';
const SCOPES = 'openid email profile';
const SUB_PREFIX = 'sub-';

const log = (...args) => console.error('[oidc-provider]', ...args);

// Account model: the accountId (which oidc-provider always uses as `sub`) is
// "sub-<email>", so any e-mail address is a valid, stable account.
function account(accountId) {
  const email = accountId.slice(SUB_PREFIX.length);
  const local = email.split('@')[0];
  return {
    accountId,
    async claims() {
      return {
        sub: accountId,
        email,
        email_verified: !local.startsWith('unverified'),
        name: local,
      };
    },
  };
}

// Fresh RSA signing key for every run (avoids the development-keys warning).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = {
  ...privateKey.export({ format: 'jwk' }),
  kid: randomBytes(8).toString('hex'),
  alg: 'RS256',
  use: 'sig',
};

// Default login + consent prompts, plus: re-authenticate when the existing
// session belongs to a different account than the one named by login_hint
// (otherwise a re-used cookie jar would silently stay logged in as the
// previous user).
const policy = interactionPolicy.base();
policy.get('login').checks.add(new interactionPolicy.Check(
  'login_hint_mismatch',
  'session account differs from login_hint',
  (ctx) => {
    const { login_hint: hint } = ctx.oidc.params;
    const current = ctx.oidc.session.accountId;
    return Boolean(hint && current && current !== SUB_PREFIX + hint);
  },
));

const configuration = {
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    redirect_uris: [REDIRECT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  }],
  jwks: { keys: [signingJwk] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  scopes: ['openid', 'email', 'profile'],
  // Put the scope-derived claims into the ID token, not only into userinfo.
  conformIdTokenClaims: false,
  // Require PKCE for every client (only S256 is supported by oidc-provider).
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
  },
  interactions: {
    policy,
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  findAccount: async (_ctx, id) => (id.startsWith(SUB_PREFIX) ? account(id) : undefined),
  // Render errors as plain text instead of the default HTML page.
  renderError(ctx, out, _error) {
    ctx.type = 'text/plain; charset=utf-8';
    ctx.body = Object.entries(out).map(([k, v]) => `${k}: ${v}`).join('\n') + '\n';
  },
};

let provider; // created once the actual port (and thus the issuer) is known
let providerCallback;

// Completes login + consent in one go, with no user interaction.
async function handleInteraction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const email = details.params.login_hint;
  if (typeof email !== 'string' || !email.includes('@')) {
    res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' });
    res.end('login_hint (an e-mail address) is required in the authorization request\n');
    return;
  }
  const accountId = SUB_PREFIX + email;

  if (details.session?.accountId && details.session.accountId !== accountId) {
    // Switching accounts inside an existing session would make oidc-provider
    // answer with an auto-submitting logout form (needs JavaScript). Instead
    // drop the session cookie and restart the authorization request.
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(details.params)) {
      if (v !== undefined) query.set(k, String(v));
    }
    const expired = 'path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT; samesite=lax; httponly';
    res.writeHead(303, {
      location: `${provider.issuer}/auth?${query}`,
      'set-cookie': [`_session=; ${expired}`, `_session.sig=; ${expired}`],
    });
    res.end();
    return;
  }

  let { grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId, clientId: details.params.client_id });
  grant.addOIDCScope(SCOPES);
  grantId = await grant.save();

  await provider.interactionFinished(req, res, {
    login: { accountId },
    consent: { grantId },
  }, { mergeWithLastSubmission: false });
}

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    handleInteraction(req, res).catch((err) => {
      log('interaction failed:', err);
      if (!res.headersSent) {
        res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' });
      }
      res.end(`interaction failed: ${err.message}\n`);
    });
    return;
  }
  providerCallback(req, res);
});

server.on('error', (err) => {
  log(`cannot listen on ${HOST}:${PORT}:`, err.message);
  process.exit(1);
});

server.listen(PORT, HOST, () => {
  const { port } = server.address();
  const issuer = `http://${HOST}:${port}`;
  provider = new Provider(issuer, configuration);
  providerCallback = provider.callback();
  provider.on('server_error', (_ctx, err) => log('server_error:', err));
  process.stdout.write(`OIDC_ISSUER=${issuer}\n`);
  log(`listening, issuer ${issuer}, client ${CLIENT_ID}, redirect ${REDIRECT_URI}`);
});

function shutdown(reason) {
  log(`shutting down (${reason})`);
  server.close();
  server.closeAllConnections();
  process.exit(0);
}

process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
if (process.env.OIDC_EXIT_ON_STDIN_EOF !== '0') {
  // The parent test keeps our stdin open; when it dies, stdin reaches EOF.
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}
