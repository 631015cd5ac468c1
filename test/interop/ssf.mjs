// Shared Signals receiver written from SSF 1.0, CAEP 1.0, RFC 8935 and RFC
// 8936 only (not from tokend's code), with `jose` verifying every SET
// against the transmitter's JWKS: it discovers the transmitter, creates a
// poll stream and a push stream (to an HTTP server of its own), revokes a
// family through the Connect API, expects a verifiable session-revoked SET
// within a second on both, acknowledges it and does not see it again, and
// asks for verification and gets the verification event with its state.
// Prints one JSON line per check; exits 1 if any check failed.
//
// usage: node ssf.mjs http://127.0.0.1:PORT
import * as http from 'node:http'
import * as jose from 'jose'

const [base] = process.argv.slice(2)
const SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked'
const VERIFICATION = 'https://schemas.openid.net/secevent/ssf/event-type/verification'
let failed = false

function check(name, ok, detail) {
  console.log(JSON.stringify({ flow: 'ssf', check: name, ok: !!ok, detail }))
  if (!ok) failed = true
}

async function json(url, method, body) {
  const res = await fetch(url, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : null }
}

// The push receiver (RFC 8935): 202 for a SET it accepts.
const pushed = []
let wake = () => {}
const server = http.createServer((req, res) => {
  let body = ''
  req.on('data', (c) => { body += c })
  req.on('end', () => {
    const ok = req.headers['content-type'] === 'application/secevent+jwt' && req.headers.authorization === 'Bearer interop-secret'
    if (!ok) {
      res.writeHead(400, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ err: 'authentication_failed', description: 'bad request' }))
      return
    }
    pushed.push(body)
    wake()
    res.writeHead(202)
    res.end()
  })
})
await new Promise((r) => server.listen(0, '127.0.0.1', r))
const pushURL = `http://127.0.0.1:${server.address().port}/events`

try {
  // SSF 1.0 §7: discovery.
  const md = (await json(`${base}/.well-known/ssf-configuration`, 'GET')).body
  check('metadata', md && md.spec_version && md.issuer === base && md.jwks_uri && md.configuration_endpoint &&
    md.verification_endpoint && md.delivery_methods_supported.includes('urn:ietf:rfc:8935') &&
    md.delivery_methods_supported.includes('urn:ietf:rfc:8936'), md)
  const jwks = jose.createRemoteJWKSet(new URL(md.jwks_uri))
  const verify = async (set, aud) => {
    const { payload, protectedHeader } = await jose.jwtVerify(set, jwks, { issuer: md.issuer, audience: aud, typ: 'secevent+jwt' })
    return { payload, protectedHeader }
  }

  // SSF 1.0 §8.1.1.1: a poll stream and a push stream.
  const poll = await json(md.configuration_endpoint, 'POST', {
    delivery: { method: 'urn:ietf:rfc:8936' }, events_requested: [SESSION_REVOKED], aud: 'https://rp.interop.test',
  })
  check('create poll stream', poll.status === 201 && poll.body.stream_id && poll.body.delivery.endpoint_url &&
    poll.body.events_delivered.includes(SESSION_REVOKED), poll)
  const push = await json(md.configuration_endpoint, 'POST', {
    delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: pushURL, authorization_header: 'Bearer interop-secret' },
    events_requested: [SESSION_REVOKED], aud: 'https://rp.interop.test',
  })
  check('create push stream', push.status === 201 && push.body.stream_id, push)
  const pollURL = poll.body.delivery.endpoint_url

  // A family, then its revocation.
  const gen = await json(`${base}/token.v1.TokenService/GenerateTokens`, 'POST', { subject: 'interop-user', clientId: 'web', audience: ['api'] })
  const fid = gen.body.familyId
  const t0 = Date.now()
  const rev = await json(`${base}/token.v1.TokenService/RevokeToken`, 'POST', { familyId: fid })
  check('revoke', rev.status === 200, rev)

  // RFC 8936 §2.4: poll (long poll) until the SET is there.
  let sets = {}
  while (Object.keys(sets).length === 0 && Date.now() - t0 < 5000) {
    sets = (await json(pollURL, 'POST', { maxEvents: 10, returnImmediately: false })).body.sets
  }
  const polledIn = Date.now() - t0
  const jtis = Object.keys(sets)
  check('poll: one SET within a second', jtis.length === 1 && polledIn < 1000, { polledIn, n: jtis.length })
  const { payload } = await verify(sets[jtis[0]], 'https://rp.interop.test')
  const ev = payload.events[SESSION_REVOKED]
  check('poll: session-revoked SET verified with jose', payload.jti === jtis[0] && ev && typeof ev.event_timestamp === 'number' &&
    payload.sub_id.format === 'complex' && payload.sub_id.user.sub === 'interop-user' && payload.sub_id.session.id === fid, payload)

  // Push.
  while (pushed.length === 0 && Date.now() - t0 < 5000) await new Promise((r) => { wake = r; setTimeout(r, 100) })
  const pushedIn = Date.now() - t0
  check('push: one SET within a second', pushed.length >= 1 && pushedIn < 1000, { pushedIn })
  if (pushed.length > 0) {
    const p = (await verify(pushed[0], 'https://rp.interop.test')).payload
    check('push: session-revoked SET verified with jose', p.events[SESSION_REVOKED] && p.sub_id.session.id === fid, p)
  }

  // RFC 8936 §2.4.2: acknowledge, and it is gone.
  const acked = await json(pollURL, 'POST', { ack: jtis, maxEvents: 10, returnImmediately: true })
  check('ack: not returned again', acked.status === 200 && Object.keys(acked.body.sets).length === 0, acked.body)

  // SSF 1.0 §8.1.4: verification, with its state.
  const state = 'interop-' + Math.random().toString(36).slice(2)
  const ver = await json(md.verification_endpoint, 'POST', { stream_id: poll.body.stream_id, state })
  check('verification requested', ver.status === 204 || ver.status === 200, ver)
  let vsets = {}
  const t1 = Date.now()
  while (Object.keys(vsets).length === 0 && Date.now() - t1 < 5000) {
    vsets = (await json(pollURL, 'POST', { maxEvents: 10, returnImmediately: false })).body.sets
  }
  const vj = Object.keys(vsets)
  let vev
  if (vj.length === 1) vev = (await verify(vsets[vj[0]], 'https://rp.interop.test')).payload
  check('verification event with its state', vev && vev.events[VERIFICATION] && vev.events[VERIFICATION].state === state, vev)
  await json(pollURL, 'POST', { ack: vj, maxEvents: 0 })
} catch (e) {
  check('no exception', false, String(e && e.stack || e))
}
server.close()
process.exit(failed ? 1 : 0)
