// A real OpenID provider for the tests: panva's oidc-provider (a certified OP), with its
// development sign-in pages (any login name that is in the accounts file, any password).
//
// Environment (set by tests/oidc/conftest.py):
//   OP_MODULES   the node_modules folder that holds oidc-provider
//   OP_PORT      the loopback port to listen on
//   OP_CLIENT    JSON: {"client_id", "client_secret", "redirect_uri"}
//   OP_ACCOUNTS  a JSON file {"<login>": {"sub", "preferred_username", "email", "groups"}},
//                read at every sign-in, so a test can change someone's groups
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const { default: Provider } = await import(
  pathToFileURL(join(process.env.OP_MODULES, 'oidc-provider', 'lib', 'index.js')).href
);

const port = Number(process.env.OP_PORT);
const client = JSON.parse(process.env.OP_CLIENT);
const accountsFile = process.env.OP_ACCOUNTS;

function account(id) {
  const accounts = JSON.parse(readFileSync(accountsFile, 'utf8'));
  return Object.hasOwn(accounts, id) ? accounts[id] : undefined;
}

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: client.client_id,
    client_secret: client.client_secret,
    redirect_uris: [client.redirect_uri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  // The groups claim comes with the 'groups' scope, as with Dex (Keycloak: a client scope
  // with a group membership mapper).
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  scopes: ['openid', 'profile', 'email', 'groups'],
  pkce: { required: () => true, methods: ['S256'] },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['ecliptic-tests-only'] },
  async findAccount(ctx, id) {
    const a = account(id);
    if (a === undefined) return undefined;
    return {
      accountId: id,
      async claims() {
        const now = account(id) ?? a;
        return {
          sub: now.sub ?? id,
          preferred_username: now.preferred_username ?? id,
          name: now.name ?? id,
          email: now.email ?? `${id}@example.org`,
          email_verified: true,
          groups: now.groups ?? [],
        };
      },
    };
  },
});

provider.on('server_error', (ctx, err) => console.error('server_error', err));
const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on http://127.0.0.1:${port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
