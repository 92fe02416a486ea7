'use strict'

// STAND-IN for the service's own rate limiter (the hardening issue, being built in parallel):
// until that is merged, this local proxy plays its part in front of the real service. It
// answers 429 {"error": {"code": "RATE_LIMITED"}} with Retry-After to the requests a test
// names, and forwards everything else unchanged. The lead points these tests at the real
// limiter after merging. (It can also answer a fixed 401, to test that the client logs in
// again only once when a server keeps refusing.)

const http = require('node:http')

const HOP_BY_HOP = new Set(['host', 'connection', 'content-length', 'keep-alive', 'transfer-encoding'])

async function startThrottlingStandIn(target) {
  const rules = []
  const seen = []
  const server = http.createServer(async (req, res) => {
    const chunks = []
    for await (const chunk of req) chunks.push(chunk)
    seen.push({ method: req.method, path: req.url })
    const rule = rules.find((r) => r.remaining > 0 && r.method === req.method && req.url.startsWith(r.path))
    if (rule) {
      rule.remaining -= 1
      const headers = { 'content-type': 'application/json' }
      if (rule.retryAfter !== undefined) headers['retry-after'] = String(rule.retryAfter)
      res.writeHead(rule.status, headers)
      res.end(JSON.stringify({ error: { code: rule.code, message: `${rule.code} (stand-in)` } }))
      return
    }
    const headers = Object.fromEntries(Object.entries(req.headers).filter(([k]) => !HOP_BY_HOP.has(k)))
    const body = chunks.length ? Buffer.concat(chunks) : undefined
    const upstream = await fetch(target + req.url, { method: req.method, headers, body })
    const payload = Buffer.from(await upstream.arrayBuffer())
    res.writeHead(upstream.status, { 'content-type': upstream.headers.get('content-type') || 'text/plain' })
    res.end(payload)
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    baseUrl: `http://127.0.0.1:${server.address().port}`,
    seen,
    throttle(method, path, { times, retryAfter }) {
      rules.push({ method, path, remaining: times, status: 429, code: 'RATE_LIMITED', retryAfter })
    },
    refuse(method, path, { times, status, code }) {
      rules.push({ method, path, remaining: times, status, code })
    },
    clear: () => { rules.length = 0 },
    close: () => new Promise((resolve) => { server.close(resolve); server.closeAllConnections() }),
  }
}

module.exports = { startThrottlingStandIn }
