// node-oidc-provider as the peer benchmark (test/peers) runs it: one client
// ("bench", client_secret_basic) that may use client_credentials and
// refresh_token, JWT access tokens (RFC 9068 shape) signed with ALG, refresh
// tokens rotated on every use. The store is the provider's default memory
// adapter.
//
//   node server.mjs PORT ALG
//
// POST /bench/seed?n=N makes N refresh tokens, each of a grant of its own
// (an account, the scope "offline_access api", the resource urn:bench:api),
// through the provider's own Grant and RefreshToken models: what a finished
// authorization code flow with offline_access leaves behind.
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const [port, alg] = process.argv.slice(2);
if (!port || !['ES256', 'RS256'].includes(alg)) {
  console.error('usage: node server.mjs PORT ES256|RS256');
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

// Refresh tokens for one benchmark run, made when the run starts: the
// default memory adapter keeps at most 1,000 records (least recently used
// first out), so tokens made at start would be gone by the later runs.
async function seed(n) {
  const client = await provider.Client.find('bench');
  const tokens = [];
  for (let i = 0; i < n; i += 1) {
    const accountId = `user-${seq += 1}`;
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
  return tokens;
}
let seq = 0;

// POST /bench/seed?n=N answers N refresh tokens, one a line. The server
// listens on loopback only; the route exists for the benchmark.
provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && ctx.path === '/bench/seed') {
    const n = Math.min(Number(ctx.query.n) || 0, 1024);
    ctx.type = 'text/plain';
    ctx.body = (await seed(n)).join('\n');
    return;
  }
  await next();
});

provider.listen(Number(port), '127.0.0.1', () => console.log('ready'));
