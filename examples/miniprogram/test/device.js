'use strict'

// Test helpers: the backends `make test-miniprogram` started, and a "device" (one user's phone:
// the stand-in wx with its storage, and the mini-program's services built on it).

const { createServices } = require('../lib/services')
const { sleep } = require('../lib/wxcall')
const { createStandInWx } = require('./standin-wx')

function backends() {
  if (!process.env.MP_BACKENDS) {
    throw new Error('MP_BACKENDS is not set: run these tests with `make test-miniprogram`, ' +
      'which starts the services they talk to')
  }
  return JSON.parse(process.env.MP_BACKENDS)
}

// A device whose mini-program talks to `apiBase` (the backend, or a stand-in in front of it).
// Every wait the client asks for is recorded in `waits` (and really waited).
function device(backend, { apiBase = backend.baseUrl, wx = createStandInWx(backend), useSimulator = false } = {}) {
  const waits = []
  const recordingSleep = (ms) => { waits.push(ms); return sleep(ms) }
  const services = createServices(wx, { apiBase, useSimulator }, {
    api: { sleep: recordingSleep },
    purchases: { sleep: recordingSleep },
  })
  return { wx, log: wx.standIn.log, behaviour: wx.standIn.behaviour, waits, ...services }
}

// The server's own view, asked directly (not through the client under test).
async function serverOrders(backend, token) {
  const response = await fetch(`${backend.baseUrl}/api/v1/orders?limit=100`, {
    headers: { authorization: `Bearer ${token}` },
  })
  if (response.status !== 200) throw new Error(`GET /orders: ${response.status}`)
  return (await response.json()).items
}

async function simulatorOrder(backend, outTradeNo) {
  const orders = await (await fetch(`${backend.baseUrl}/sim/_control/orders`)).json()
  return orders.find((o) => o.out_trade_no === outTradeNo)
}

async function firstProduct(dev) {
  const products = await dev.api.listProducts()
  if (!products.length) throw new Error('no products: the harness seeds the demo catalogue')
  return products[0]
}

function requestsTo(log, method, pathPattern) {
  return log.requests.filter((r) => r.method === method && pathPattern.test(new URL(r.url).pathname + new URL(r.url).search))
}

module.exports = { backends, device, firstProduct, requestsTo, serverOrders, simulatorOrder }
