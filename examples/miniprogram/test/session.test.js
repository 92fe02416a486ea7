'use strict'

// Session, throttling and error handling of the client module. These do not depend on the
// payment configuration, so they run against the first backend only.

const assert = require('node:assert/strict')
const { after, afterEach, before, describe, test } = require('node:test')

const { TOKEN_KEY } = require('../lib/api')
const { PURCHASE_KEY } = require('../lib/purchases')
const { backends, device, firstProduct, requestsTo, serverOrders } = require('./device')
const { startThrottlingStandIn } = require('./ratelimit-standin')

const backend = backends()[0]
const LOGIN = /^\/api\/v1\/auth\/login$/

describe('session', { timeout: 60000 }, () => {
  test('at start-up a stored token is kept while wx.checkSession succeeds, and used without wx.login', async () => {
    const first = device(backend)
    await first.api.login()
    const token = first.wx.getStorageSync(TOKEN_KEY)
    const relaunched = device(backend, { wx: first.wx }) // same phone, app launched again
    const loginsBefore = first.log.logins

    assert.equal(await relaunched.api.start(), true)
    await relaunched.api.listOrders()

    assert.equal(first.log.checkSessions, 1)
    assert.equal(first.log.logins, loginsBefore)
    assert.equal(first.log.requests.at(-1).header.Authorization, `Bearer ${token}`)
  })

  test('at start-up a stored token is dropped when wx.checkSession fails; the next call logs in', async () => {
    const first = device(backend)
    await first.api.login()
    const stale = first.wx.getStorageSync(TOKEN_KEY)
    first.wx.standIn.expireSessionKey() // WeChat's session_key has expired meanwhile
    const relaunched = device(backend, { wx: first.wx })

    assert.equal(await relaunched.api.start(), false)
    assert.equal(first.wx.getStorageSync(TOKEN_KEY), '')
    const since = first.log.requests.length
    await relaunched.api.listOrders()

    const afterStart = first.log.requests.slice(since)
    assert.ok(LOGIN.test(new URL(afterStart[0].url).pathname)) // logged in first
    assert.ok(afterStart.every((r) => r.header.Authorization !== `Bearer ${stale}`))
    assert.equal(first.log.logins, 2)
  })

  test('a token the server does not know (401 SESSION_INVALID): fresh wx.login, one login, retried', async () => {
    const dev = device(backend)
    dev.wx.setStorageSync(TOKEN_KEY, 'not-a-token-the-server-issued')

    const page = await dev.api.listOrders()

    assert.deepEqual(page.items, [])
    const codes = dev.log.requests.map((r) => r.code || r.statusCode)
    assert.deepEqual(codes, ['SESSION_INVALID', 200, 200]) // orders, login, orders again
    assert.equal(dev.log.logins, 1)
  })

  test('concurrent calls refused together share one fresh login', async () => {
    const dev = device(backend)
    dev.wx.setStorageSync(TOKEN_KEY, 'stale-token')

    await Promise.all([dev.api.listOrders(), dev.api.listOrders(), dev.api.listOrders()])

    assert.equal(dev.log.logins, 1)
    assert.equal(requestsTo(dev.log, 'POST', LOGIN).length, 1)
  })
})

describe('throttled calls (429 RATE_LIMITED + Retry-After) and a server that keeps refusing', { timeout: 60000 }, () => {
  let standIn
  before(async () => { standIn = await startThrottlingStandIn(backend.baseUrl) })
  after(() => standIn.close())
  afterEach(() => standIn.clear())

  test('create answered 429 once: waits Retry-After, sends again with the same key, one order', async () => {
    const dev = device(backend, { apiBase: standIn.baseUrl })
    const product = await firstProduct(dev)
    standIn.throttle('POST', '/api/v1/orders', { times: 1, retryAfter: 1 })

    const result = await dev.purchases.buy(product.id, 1)

    assert.equal(result.outcome, 'paid')
    assert.equal(dev.waits.filter((ms) => ms === 1000).length, 1) // Retry-After (polls wait 500)
    const creates = requestsTo(dev.log, 'POST', /^\/api\/v1\/orders$/)
    assert.deepEqual(creates.map((r) => r.statusCode), [429, 201])
    assert.equal(creates[0].header['Idempotency-Key'], creates[1].header['Idempotency-Key'])
    assert.equal((await serverOrders(backend, dev.wx.getStorageSync(TOKEN_KEY))).length, 1)
  })

  test('login answered 429: waits, then logs in with a fresh code', async () => {
    const dev = device(backend, { apiBase: standIn.baseUrl })
    standIn.throttle('POST', '/api/v1/auth/login', { times: 1, retryAfter: 1 })

    await dev.api.login()

    assert.deepEqual(requestsTo(dev.log, 'POST', LOGIN).map((r) => r.statusCode), [429, 200])
    assert.equal(dev.log.logins, 2) // a code may be used up by a refused attempt: never reused
    assert.deepEqual(dev.waits, [1000])
  })

  test('throttled every time: bounded retries, then a message for the user, and no order', async () => {
    const dev = device(backend, { apiBase: standIn.baseUrl })
    const product = await firstProduct(dev)
    await dev.api.login()
    standIn.throttle('POST', '/api/v1/orders', { times: 100, retryAfter: 1 })

    await assert.rejects(dev.purchases.buy(product.id, 1), (error) => {
      assert.equal(error.code, 'RATE_LIMITED')
      assert.match(error.userMessage, /wait a minute/)
      return true
    })
    assert.equal(requestsTo(dev.log, 'POST', /^\/api\/v1\/orders$/).length, 3) // 1 + 2 retries
    assert.deepEqual(dev.waits, [1000, 1000])
    assert.ok(dev.wx.getStorageSync(PURCHASE_KEY).key) // kept: try again later, same purchase
    assert.equal((await serverOrders(backend, dev.wx.getStorageSync(TOKEN_KEY))).length, 0)
  })

  test('a Retry-After too long to hold the user on a spinner is not waited for', async () => {
    const dev = device(backend, { apiBase: standIn.baseUrl })
    standIn.throttle('GET', '/api/v1/products', { times: 1, retryAfter: 120 })

    await assert.rejects(dev.api.listProducts(), { code: 'RATE_LIMITED' })
    assert.deepEqual(dev.waits, [])
  })

  test('a server that keeps answering 401 gets one new login, not a loop', async () => {
    const dev = device(backend, { apiBase: standIn.baseUrl })
    await dev.api.login()
    standIn.refuse('GET', '/api/v1/orders', { times: 2, status: 401, code: 'SESSION_EXPIRED' })

    await assert.rejects(dev.api.listOrders(), (error) => {
      assert.equal(error.code, 'SESSION_EXPIRED')
      assert.match(error.userMessage, /sign in/)
      return true
    })
    assert.equal(dev.log.logins, 2)
    assert.equal(requestsTo(dev.log, 'GET', /^\/api\/v1\/orders/).length, 2)
  })
})

describe('errors from the server, as the user reads them', { timeout: 60000 }, () => {
  test('a product that is not on sale: PRODUCT_NOT_FOUND, and the purchase ends', async () => {
    const dev = device(backend)

    await assert.rejects(dev.purchases.buy(987654321, 1), (error) => {
      assert.equal(error.status, 404)
      assert.equal(error.code, 'PRODUCT_NOT_FOUND')
      assert.equal(error.userMessage, 'This product is no longer on sale.')
      return true
    })
    assert.equal(dev.wx.getStorageSync(PURCHASE_KEY), '')
  })

  test('an invalid quantity: VALIDATION_ERROR; someone else\'s order: ORDER_NOT_FOUND', async () => {
    const dev = device(backend)
    const other = device(backend)
    const product = await firstProduct(dev)
    other.behaviour.payments.push('cancel')
    const theirs = await other.purchases.buy(product.id, 1)

    await assert.rejects(dev.api.createOrder(product.id, 1000, 'mp-too-many'), { code: 'VALIDATION_ERROR' })
    await assert.rejects(dev.api.getOrder(theirs.order.out_trade_no), (error) => {
      assert.equal(error.code, 'ORDER_NOT_FOUND')
      assert.equal(error.userMessage, 'We could not find this order.')
      return true
    })
  })

  test('resuming a paid order: ORDER_NOT_PAYABLE', async () => {
    const dev = device(backend)
    const product = await firstProduct(dev)
    const paid = await dev.purchases.buy(product.id, 1)

    await assert.rejects(dev.purchases.resume(paid.order.out_trade_no), (error) => {
      assert.equal(error.status, 409)
      assert.equal(error.code, 'ORDER_NOT_PAYABLE')
      assert.match(error.userMessage, /can no longer be paid/)
      return true
    })
  })
})

describe("the server's own limiter (one login a minute on this backend)", { timeout: 60000 }, () => {
  test('a real 429 RATE_LIMITED: the client waits Retry-After only when it is short', async () => {
    const throttled = backend.throttled
    await device(throttled).api.login() // the minute's one login
    const dev = device(throttled)

    const outcome = await dev.api.login().then(() => 'logged in', (error) => error)

    const [refused] = requestsTo(dev.log, 'POST', LOGIN)
    assert.equal(refused.statusCode, 429)
    assert.equal(refused.code, 'RATE_LIMITED')
    const seconds = Number(refused.responseHeader['retry-after'])
    assert.ok(Number.isInteger(seconds) && seconds >= 1 && seconds <= 60, `Retry-After ${seconds}`)
    if (seconds <= 10) {
      // Short: waited exactly what the server said, then tried again with a fresh code.
      assert.equal(dev.waits[0], seconds * 1000)
      assert.ok(requestsTo(dev.log, 'POST', LOGIN).length >= 2)
    } else {
      // Too long to hold the user on a spinner: no wait, a message instead.
      assert.deepEqual(dev.waits, [])
      assert.equal(outcome.code, 'RATE_LIMITED')
      assert.match(outcome.userMessage, /wait a minute/)
    }
  })
})
