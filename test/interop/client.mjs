// Interop client: makes DPoP proofs with the npm packages `dpop` and `jose`
// (independent implementations of RFC 9449 and JOSE), calls tokend over the
// Connect protocol (JSON), and verifies what it gets back with `jose`:
// the access token against the served JWKS, and its cnf.jkt against the
// thumbprint jose computes for the proof key. Prints one JSON line per
// check; exits 1 if any check failed.
//
// usage: node client.mjs http://127.0.0.1:PORT ISSUER
import * as DPoP from 'dpop'
import * as jose from 'jose'

const [base, issuer] = process.argv.slice(2)
const htu = 'https://as.example.com/token'
const rsURL = 'https://api.example.com/resource?x=1'
let failed = false

function check(alg, name, ok, detail) {
  console.log(JSON.stringify({ alg, check: name, ok: !!ok, detail }))
  if (!ok) failed = true
}

async function call(method, body) {
  const res = await fetch(`${base}/token.v1.TokenService/${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  return { status: res.status, body: await res.json(), nonce: res.headers.get('dpop-nonce') }
}

// Proofs: the dpop package for the algorithms it supports, jose's SignJWT
// for the others.
async function keyPair(alg) {
  if (alg === 'ES256' || alg === 'RS256' || alg === 'PS256') return DPoP.generateKeyPair(alg, { extractable: true })
  return jose.generateKeyPair(alg, { extractable: true })
}

async function proof(alg, kp, htm, url, accessToken) {
  if (alg === 'ES256' || alg === 'RS256' || alg === 'PS256') return DPoP.generateProof(kp, url, htm, undefined, accessToken)
  const jwk = await jose.exportJWK(kp.publicKey)
  const claims = { htm, htu: url, jti: crypto.randomUUID(), iat: Math.floor(Date.now() / 1000) }
  if (accessToken) claims.ath = jose.base64url.encode(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(accessToken))))
  return new jose.SignJWT(claims).setProtectedHeader({ alg, typ: 'dpop+jwt', jwk }).sign(kp.privateKey)
}

const jwks = jose.createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`))

for (const alg of ['ES256', 'RS256', 'PS256', 'ES384', 'EdDSA']) {
  try {
    const kp = await keyPair(alg)
    const jkt = await jose.calculateJwkThumbprint(await jose.exportJWK(kp.publicKey), 'sha256')
    const gen = await call('GenerateTokens', {
      subject: `interop-${alg}`, client_id: 'interop', audience: ['https://api.example.com'], scopes: ['read'],
      dpop_proof: await proof(alg, kp, 'POST', htu), http_method: 'POST', http_uri: htu,
    })
    check(alg, 'GenerateTokens accepts the proof', gen.status === 200 && gen.body.tokenType === 'DPoP', gen.body)
    if (gen.status !== 200) continue
    const { payload, protectedHeader } = await jose.jwtVerify(gen.body.accessToken, jwks, { issuer, typ: 'at+jwt' })
    check(alg, 'access token verifies in jose against the JWKS', protectedHeader.kid, protectedHeader)
    check(alg, 'cnf.jkt equals the jose thumbprint', payload.cnf && payload.cnf.jkt === jkt, { cnf: payload.cnf, jkt })
    if (alg === 'ES256' || alg === 'RS256' || alg === 'PS256') {
      const dpopJkt = await DPoP.calculateThumbprint(kp.publicKey)
      check(alg, 'cnf.jkt equals the dpop package thumbprint', payload.cnf.jkt === dpopJkt, { dpopJkt })
    }
    const ref = await call('RefreshTokens', {
      refresh_token: gen.body.refreshToken, client_id: 'interop',
      dpop_proof: await proof(alg, kp, 'POST', htu), http_method: 'POST', http_uri: htu,
    })
    check(alg, 'RefreshTokens with a proof of the same key', ref.status === 200 && ref.body.tokenType === 'DPoP', ref.body)
    const other = await keyPair(alg)
    const stolen = await call('RefreshTokens', {
      refresh_token: ref.body.refreshToken, client_id: 'interop',
      dpop_proof: await proof(alg, other, 'POST', htu), http_method: 'POST', http_uri: htu,
    })
    check(alg, 'RefreshTokens with another key is refused', stolen.status === 400 && stolen.body.message.startsWith('invalid_dpop_proof'), stolen.body)
    const at = ref.body.accessToken
    const val = await call('ValidateDPoP', { proof: await proof(alg, kp, 'GET', rsURL, at), http_method: 'GET', http_uri: rsURL, access_token: at })
    check(alg, 'ValidateDPoP accepts a resource request proof with ath', val.status === 200 && val.body.valid === true && val.body.jkt === jkt, val.body)
    const bare = await call('ValidateDPoP', { http_method: 'GET', http_uri: rsURL, access_token: at })
    check(alg, 'ValidateDPoP refuses the bound token without a proof', bare.status === 200 && !bare.body.valid && bare.body.error === 'invalid_token', bare.body)
  } catch (e) {
    check(alg, 'no exception', false, String(e && e.stack || e))
  }
}
process.exit(failed ? 1 : 0)
