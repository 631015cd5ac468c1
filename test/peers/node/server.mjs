// node-oidc-provider as the peer benchmark (test/peers) runs it: one client
// ("bench", client_secret_basic) that may use client_credentials and
// refresh_token, JWT access tokens (RFC 9068 shape) signed with ALG, refresh
// tokens rotated on every use. The store is the provider's default memory
// adapter.
//
//   node server.mjs PORT ALG SEED_FILE SEED_COUNT
//
// Before it prints "ready" it writes SEED_COUNT refresh tokens to SEED_FILE,
// one a line: each belongs to a grant of its own (an account, the scope
// "offline_access api", the resource urn:bench:api), made through the
// provider's own Grant and RefreshToken models, which is what a finished
// authorization code flow with offline_access leaves behind.
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const [port, alg, seedFile, seedCount] = process.argv.slice(2);
if (!port || !['ES256', 'RS256'].includes(alg) || !seedFile) {
  console.error('usage: node server.mjs PORT ES256|RS256 SEED_FILE SEED_COUNT');
  process.exit(2);
}

const { privateKey } = alg === 'ES256'
  ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
  : generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid: `bench-${alg}` };

const resource = 'urn:bench:api';
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [{
    client_id: 'bench',
    client_secret: 'bench-secret-0123456789',
    grant_types: ['client_credentials', 'refresh_token', 'authorization_code'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/cb'],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'api offline_access',
    id_token_signed_response_alg: alg,
  }],
  jwks: { keys: [jwk] },
  scopes: ['api', 'offline_access'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'api',
        audience: 'api',
        accessTokenTTL: 900,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg } },
      }),
    },
  },
  rotateRefreshToken: true,
  ttl: { RefreshToken: 7 * 24 * 3600 },
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
});

const client = await provider.Client.find('bench');
const tokens = [];
for (let i = 0; i < Number(seedCount || 0); i += 1) {
  const accountId = `user-${i}`;
  const grant = new provider.Grant({ accountId, clientId: client.clientId });
  grant.addOIDCScope('offline_access');
  grant.addResourceScope(resource, 'api');
  const grantId = await grant.save();
  const rt = new provider.RefreshToken({
    accountId,
    client,
    grantId,
    gty: 'authorization_code',
    scope: 'offline_access api',
    resource,
    authTime: Math.floor(Date.now() / 1000),
    expiresWithSession: false,
  });
  tokens.push(await rt.save());
}
writeFileSync(seedFile, tokens.map((t) => `${t}\n`).join(''));

provider.listen(Number(port), '127.0.0.1', () => console.log('ready'));
