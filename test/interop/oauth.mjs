// OAuth interop client: oauth4webapi (an independent, certified OAuth 2
// client) drives tokend's standard endpoints from the metadata document
// alone (RFC 8414): it rotates a Bearer and a DPoP-bound refresh token
// (answering the use_dpop_nonce challenge), introspects the new access
// token, revokes the refresh token, then sees the refresh refused with
// invalid_grant and the access token inactive; a proof from another key
// is refused. The first tokens come from GenerateTokens (Connect JSON):
// minting is not an OAuth endpoint. Prints one JSON line per check; exits
// 1 if any check failed. A signed introspection response (RFC 9701) is
// read by oauth4webapi and verified by jose against the JWKS.
//
// usage: node oauth.mjs http://127.0.0.1:PORT
import * as oauth from 'oauth4webapi'
import * as DPoPProof from 'dpop'
import * as jose from 'jose'

const base = process.argv[2]
const insecure = { [oauth.allowInsecureRequests]: true } // loopback http
let failed = false

function check(flow, name, ok, detail) {
  console.log(JSON.stringify({ flow, check: name, ok: !!ok, detail }))
  if (!ok) failed = true
}

async function generate(body) {
  const res = await fetch(`${base}/token.v1.TokenService/GenerateTokens`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  })
  return { status: res.status, body: await res.json(), nonce: res.headers.get('dpop-nonce') }
}

// retryOnNonce runs request once more when the server challenges with
// use_dpop_nonce; the DPoP handle keeps the nonce it was given.
async function retryOnNonce(request, process) {
  try {
    return await process(await request())
  } catch (err) {
    if (!oauth.isDPoPNonceError(err)) throw err
    return process(await request())
  }
}

async function errorOf(promise) {
  try {
    await promise
    return undefined
  } catch (err) {
    return err
  }
}

const issuer = new URL(base)
const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }))
check('discovery', 'endpoints', as.token_endpoint && as.revocation_endpoint && as.introspection_endpoint && as.jwks_uri, as)
check('discovery', 'dpop algorithms', (as.dpop_signing_alg_values_supported || []).includes('ES256'), as.dpop_signing_alg_values_supported)
const client = { client_id: 'spa' }
const auth = oauth.None()

async function flow(name, dpop, firstRefreshToken, keyPair) {
  const opts = { ...insecure, ...(dpop ? { DPoP: dpop } : {}) }
  const rotated = await retryOnNonce(
    () => oauth.refreshTokenGrantRequest(as, client, auth, firstRefreshToken, opts),
    (res) => oauth.processRefreshTokenResponse(as, client, res))
  check(name, 'rotated', rotated.access_token && rotated.refresh_token && rotated.refresh_token !== firstRefreshToken, rotated)
  check(name, 'token_type', rotated.token_type === (dpop ? 'dpop' : 'bearer'), rotated.token_type)
  check(name, 'expires_in', rotated.expires_in > 0, rotated.expires_in)

  const active = await oauth.processIntrospectionResponse(as, client, await oauth.introspectionRequest(as, client, auth, rotated.access_token, insecure))
  check(name, 'introspection active', active.active === true && active.client_id === 'spa' && active.sub === 'frank', active)
  if (dpop) {
    const jkt = await jose.calculateJwkThumbprint(await jose.exportJWK(keyPair.publicKey))
    check(name, 'introspection cnf.jkt', active.cnf && active.cnf.jkt === jkt, { cnf: active.cnf, jkt })
  }
  await oauth.processRevocationResponse(await oauth.revocationRequest(as, client, auth, rotated.refresh_token, insecure))
  check(name, 'revoked', true)

  const err = await errorOf(retryOnNonce(
    () => oauth.refreshTokenGrantRequest(as, client, auth, rotated.refresh_token, opts),
    (res) => oauth.processRefreshTokenResponse(as, client, res)))
  check(name, 'refresh after revocation is invalid_grant', err instanceof oauth.ResponseBodyError && err.error === 'invalid_grant', err && { error: err.error, message: err.message })
  const inactive = await oauth.processIntrospectionResponse(as, client, await oauth.introspectionRequest(as, client, auth, rotated.access_token, insecure))
  check(name, 'access token inactive', inactive.active === false, inactive)
}

// Bearer.
const bearer = await generate({ subject: 'frank', client_id: 'spa', audience: ['api'], scopes: ['read'] })
check('bearer', 'generated', bearer.status === 200, bearer.body)
await flow('bearer', undefined, bearer.body.refreshToken)

// DPoP-bound: the family is bound by a proof of the same key pair at
// GenerateTokens (Connect JSON: camelCase fields; made with the dpop package, answering the nonce
// challenge), then oauth4webapi's DPoP handle refreshes it.
async function boundFamily(keyPair) {
  const endpoint = as.token_endpoint
  let nonce
  for (let i = 0; i < 2; i++) {
    const proof = await DPoPProof.generateProof(keyPair, endpoint, 'POST', nonce)
    const r = await generate({ subject: 'frank', client_id: 'spa', audience: ['api'], dpop_proof: proof, http_method: 'POST', http_uri: endpoint })
    if (r.status === 200) return r.body
    nonce = r.nonce
  }
  throw new Error('GenerateTokens with a proof failed')
}
const keyPair = await oauth.generateKeyPair('ES256', { extractable: true })
const bound = await boundFamily(keyPair)
check('dpop', 'generated DPoP-bound', bound.tokenType === 'DPoP', bound)
const dpop = oauth.DPoP(client, keyPair)
await flow('dpop', dpop, bound.refreshToken, keyPair)

// A proof from another key does not refresh a bound family.
const other = oauth.DPoP(client, await oauth.generateKeyPair('ES256'))
const bound2 = await boundFamily(keyPair)
const err = await errorOf(retryOnNonce(
  () => oauth.refreshTokenGrantRequest(as, client, auth, bound2.refreshToken, { ...insecure, DPoP: other }),
  (res) => oauth.processRefreshTokenResponse(as, client, res)))
check('dpop', 'another key refused', err instanceof oauth.ResponseBodyError && ['invalid_dpop_proof', 'invalid_grant'].includes(err.error), err && { error: err.error, message: err.message })
// ... and did not revoke it: the right key still refreshes.
const still = await retryOnNonce(
  () => oauth.refreshTokenGrantRequest(as, client, auth, bound2.refreshToken, { ...insecure, DPoP: dpop }),
  (res) => oauth.processRefreshTokenResponse(as, client, res))
check('dpop', 'right key still refreshes', still.token_type === 'dpop', still)

// A signed introspection response (RFC 9701), verified by jose against
// the JWKS of the metadata.
const signed = await generate({ subject: 'frank', client_id: 'spa', audience: ['api'] })
const jwtRes = await oauth.introspectionRequest(as, client, auth, signed.body.accessToken, { ...insecure, requestJwtResponse: true })
check('rfc9701', 'content type', jwtRes.headers.get('content-type') === 'application/token-introspection+jwt', jwtRes.headers.get('content-type'))
const jwtText = await jwtRes.clone().text()
const viaOauth = await oauth.processIntrospectionResponse(as, client, jwtRes)
check('rfc9701', 'oauth4webapi reads it', viaOauth.active === true && viaOauth.sub === 'frank', viaOauth)
const { payload, protectedHeader } = await jose.jwtVerify(jwtText, jose.createRemoteJWKSet(new URL(as.jwks_uri)), { issuer: as.issuer, audience: 'spa', typ: 'token-introspection+jwt' })
check('rfc9701', 'jose verifies it', payload.token_introspection.active === true && payload.token_introspection.client_id === 'spa', { payload, protectedHeader })

process.exit(failed ? 1 : 0)
