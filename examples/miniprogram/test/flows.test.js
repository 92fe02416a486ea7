'use strict'

// The client module (lib/) against the running service and its simulator, on every payment
// configuration `make test-miniprogram` starts (v2 MD5, v2 HMAC-SHA256, v3 RSA).

const assert = require('node:assert/strict')
const { describe, test } = require('node:test')

const { TOKEN_KEY } = require('../lib/api')
const { PURCHASE_KEY } = require('../lib/purchases')
const { backends, device, firstProduct, requestsTo, serverOrders, simulatorOrder } = require('./device')

const CREATE = /^\/api\/v1\/orders$/
const LOGIN = /^\/api\/v1\/auth\/login$/
const SYNC = /^\/api\/v1\/orders\/[^/]+\?sync=true$/

for (const backend of backends()) {
  describe(`purchase on ${backend.name}`, { timeout: 60000 }, () => {
    test('happy path: one login, one order, exactly the returned pay params, paid per the server', async () => {
      const dev = device(backend)
      assert.equal(await dev.api.start(), false) // nothing stored: nothing to check
      const product = await firstProduct(dev)

      const result = await dev.purchases.buy(product.id, 2)

      assert.equal(result.outcome, 'paid')
      assert.equal(result.order.status, 'SUCCESS')
      assert.equal(result.order.total_fee, product.price_fen * 2)
      assert.ok(result.order.transaction_id)
      assert.equal(dev.log.logins, 1)
      assert.equal(dev.log.checkSessions, 0)
      assert.equal(requestsTo(dev.log, 'POST', LOGIN).length, 1)
      const [create] = requestsTo(dev.log, 'POST', CREATE)
      assert.match(create.header['Idempotency-Key'], /^mp-/)
      assert.equal(create.header.Authorization, `Bearer ${dev.wx.getStorageSync(TOKEN_KEY)}`)
      assert.equal(dev.log.payments.length, 1)
      assert.deepEqual(dev.log.payments[0].params, create.data.pay_params)
      assert.equal(create.data.pay_params.signType, backend.signType)
      assert.match(create.data.pay_params.timeStamp, /^\d{10}$/)
      const orders = await serverOrders(backend, dev.wx.getStorageSync(TOKEN_KEY))
      assert.deepEqual(orders.map((o) => [o.out_trade_no, o.status]), [[result.order.out_trade_no, 'SUCCESS']])
      assert.equal(dev.wx.getStorageSync(PURCHASE_KEY), '') // the purchase is over
    })

    test('cancel keeps the order payable; resuming gets fresh pay params and pays it', async () => {
      const dev = device(backend)
      const product = await firstProduct(dev)
      dev.behaviour.payments.push('cancel')

      const cancelled = await dev.purchases.buy(product.id, 1)

      assert.equal(cancelled.outcome, 'cancelled')
      const no = cancelled.order.out_trade_no
      assert.equal((await dev.api.getOrder(no)).status, 'NOTPAY')
      assert.equal((await simulatorOrder(backend, no)).trade_state, 'NOTPAY')
      assert.equal(dev.purchases.current().outTradeNo, no) // kept: the purchase is not over

      const resumed = await dev.purchases.resume(no)

      assert.equal(resumed.outcome, 'paid')
      assert.equal(resumed.order.status, 'SUCCESS')
      const [payParams] = requestsTo(dev.log, 'POST', /\/pay-params$/)
      assert.deepEqual(dev.log.payments[1].params, payParams.data.pay_params)
      assert.equal((await serverOrders(backend, dev.wx.getStorageSync(TOKEN_KEY))).length, 1)
      assert.equal(dev.purchases.current(), null)
    })

    test('a token the server expires while the user is paying: one fresh wx.login, then paid', async () => {
      const short = backend.shortSession
      const dev = device(short)
      const product = await firstProduct(dev)
      // The user looks at the payment sheet for longer than the server's session lifetime.
      dev.behaviour.thinkMs = (short.sessionSeconds + 1.5) * 1000

      const result = await dev.purchases.buy(product.id, 1)

      assert.equal(result.outcome, 'paid', result.errMsg)
      const refused = dev.log.requests.filter((r) => r.statusCode === 401)
      assert.ok(refused.length >= 1, 'the server should have refused the expired token')
      assert.ok(refused.every((r) => r.code === 'SESSION_EXPIRED'))
      // Each refusal cost exactly one wx.login and one login, and the request was sent again.
      assert.equal(dev.log.logins, 1 + refused.length)
      assert.equal(requestsTo(dev.log, 'POST', LOGIN).length, 1 + refused.length)
      const last = dev.log.requests.at(-1)
      assert.equal(last.statusCode, 200)
      assert.equal(dev.log.checkSessions, 0) // a 401 is answered with wx.login, not checkSession
      assert.equal((await serverOrders(short, dev.wx.getStorageSync(TOKEN_KEY))).length, 1)
    })

    test('a double tap makes one order and one payment sheet', async () => {
      const dev = device(backend)
      const product = await firstProduct(dev)

      const [first, second] = await Promise.all([dev.purchases.buy(product.id, 1), dev.purchases.buy(product.id, 1)])

      assert.equal(first, second)
      assert.equal(first.outcome, 'paid')
      assert.equal(requestsTo(dev.log, 'POST', CREATE).length, 1)
      assert.equal(dev.log.payments.length, 1)
      assert.equal((await serverOrders(backend, dev.wx.getStorageSync(TOKEN_KEY))).length, 1)
    })

    test('two creates with one Idempotency-Key racing at the server give one order', async () => {
      const dev = device(backend)
      const product = await firstProduct(dev)
      await dev.api.login()

      const [a, b] = await Promise.all([
        dev.api.createOrder(product.id, 1, 'mp-race-key'),
        dev.api.createOrder(product.id, 1, 'mp-race-key'),
      ])

      assert.equal(a.out_trade_no, b.out_trade_no)
      assert.equal((await serverOrders(backend, dev.wx.getStorageSync(TOKEN_KEY))).length, 1)
    })

    test('after a cancel, tapping Buy again resumes the same order (the key is kept)', async () => {
      const dev = device(backend)
      const product = await firstProduct(dev)
      dev.behaviour.payments.push('cancel')
      const cancelled = await dev.purchases.buy(product.id, 1)

      const again = await dev.purchases.buy(product.id, 1)

      assert.equal(again.outcome, 'paid')
      assert.equal(again.order.out_trade_no, cancelled.order.out_trade_no)
      const keys = requestsTo(dev.log, 'POST', CREATE).map((r) => r.header['Idempotency-Key'])
      assert.equal(new Set(keys).size, 1)
      assert.equal((await serverOrders(backend, dev.wx.getStorageSync(TOKEN_KEY))).length, 1)

      const next = await dev.purchases.buy(product.id, 1) // a new purchase once that one is paid
      assert.notEqual(next.order.out_trade_no, cancelled.order.out_trade_no)
    })

    test('the answer to create is lost after the server stored the order: the retry gets the same one', async () => {
      const dev = device(backend)
      const product = await firstProduct(dev)
      let dropped = 0
      dev.behaviour.dropResponse = (entry) => entry.method === 'POST' && CREATE.test(new URL(entry.url).pathname) && dropped++ === 0

      const result = await dev.purchases.buy(product.id, 1)

      assert.equal(result.outcome, 'paid')
      const creates = requestsTo(dev.log, 'POST', CREATE)
      assert.equal(creates.length, 2)
      assert.ok(creates[0].dropped && creates[0].statusCode === 201) // the server did store it
      assert.equal(creates[0].header['Idempotency-Key'], creates[1].header['Idempotency-Key'])
      assert.equal(creates[0].data.out_trade_no, creates[1].data.out_trade_no)
      assert.equal((await serverOrders(backend, dev.wx.getStorageSync(TOKEN_KEY))).length, 1)
    })

    test('every answer to create lost: the user is told, and the next tap finds the same order', async () => {
      const dev = device(backend)
      const product = await firstProduct(dev)
      dev.behaviour.dropResponse = (entry) => entry.method === 'POST' && CREATE.test(new URL(entry.url).pathname)

      await assert.rejects(dev.purchases.buy(product.id, 1), (error) => {
        assert.equal(error.code, 'NETWORK')
        assert.match(error.userMessage, /network/i)
        return true
      })
      assert.equal(requestsTo(dev.log, 'POST', CREATE).length, 3) // bounded: 1 + 2 retries
      assert.ok(dev.purchases.current().key) // kept: the order may exist

      dev.behaviour.dropResponse = null
      const result = await dev.purchases.buy(product.id, 1)

      assert.equal(result.outcome, 'paid')
      const orders = await serverOrders(backend, dev.wx.getStorageSync(TOKEN_KEY))
      assert.deepEqual(orders.map((o) => o.out_trade_no), [result.order.out_trade_no])
    })

    test('the server still says NOTPAY after requestPayment:ok: one ?sync=true, then SUCCESS', async () => {
      const dev = device(backend)
      const product = await firstProduct(dev)
      // WeChat's notify is late (simulator fault): only the server asking WeChat can tell.
      dev.behaviour.beforePay = async (simOrder) => {
        const { status } = await dev.wx.standIn.controlCall('/faults', {
          name: 'delay_notify', out_trade_no: simOrder.out_trade_no, delay_ms: 120000, count: 1,
        })
        assert.equal(status, 200)
      }

      const result = await dev.purchases.buy(product.id, 1)

      assert.equal(result.outcome, 'paid')
      assert.equal(result.order.status, 'SUCCESS')
      const reads = requestsTo(dev.log, 'GET', /^\/api\/v1\/orders\/[^/]+/)
      const syncs = requestsTo(dev.log, 'GET', SYNC)
      assert.equal(syncs.length, 1)
      assert.equal(reads.at(-1), syncs[0]) // the sync came last, and answered SUCCESS
      assert.equal(syncs[0].data.status, 'SUCCESS')
      assert.ok(reads.slice(0, -1).every((r) => r.data.status === 'NOTPAY'))
      assert.ok(reads.length >= 3) // it waited and looked again before asking for a sync
    })

    test('a paySign that does not verify is refused before paying; the order stays payable', async () => {
      const dev = device(backend)
      const product = await firstProduct(dev)
      dev.behaviour.tamper = (entry, response) => {
        if (entry.method === 'POST' && CREATE.test(new URL(entry.url).pathname)) {
          const sign = response.data.pay_params.paySign
          const i = Math.floor(sign.length / 2)
          response.data.pay_params.paySign = sign.slice(0, i) + (sign[i] === 'A' ? 'B' : 'A') + sign.slice(i + 1)
        }
      }

      const result = await dev.purchases.buy(product.id, 1)

      assert.equal(result.outcome, 'failed')
      assert.match(result.errMsg, /^requestPayment:fail paySign does not verify/)
      assert.deepEqual(dev.log.paid, [])
      const no = result.order.out_trade_no
      assert.equal((await simulatorOrder(backend, no)).trade_state, 'NOTPAY')
      assert.equal((await dev.api.getOrder(no)).status, 'NOTPAY')

      dev.behaviour.tamper = null
      assert.equal((await dev.purchases.resume(no)).outcome, 'paid') // fresh params verify
    })
  })
}
