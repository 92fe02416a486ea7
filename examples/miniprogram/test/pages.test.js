'use strict'

// The pages' logic as a user goes through them, launched through app.js with the stand-in wx
// as the global `wx`: real mode (wx.login / wx.requestPayment) and simulator mode (the config
// switch: codes and payment from the simulator's control API). Against the first backend.

const assert = require('node:assert/strict')
const path = require('node:path')
const { describe, test } = require('node:test')

const { backends, serverOrders } = require('./device')
const { TOKEN_KEY } = require('../lib/api')
const { createStandInWx } = require('./standin-wx')

const backend = backends()[0]
const ROOT = path.join(__dirname, '..')

function freshRequire(relative) {
  const file = require.resolve(path.join(ROOT, relative))
  delete require.cache[file]
  return require(file)
}

// What the mini-program runtime does at launch: App() registers, onLaunch runs, getApp() finds it.
function launch(wx, { useSimulator }) {
  let definition
  global.App = (d) => { definition = d }
  global.wx = wx
  Object.assign(require(path.join(ROOT, 'config')), { apiBase: backend.baseUrl, useSimulator })
  freshRequire('app.js')
  const app = { ...definition }
  app.onLaunch()
  global.getApp = () => app
  return app
}

// Page() registers a definition; each visit gets its own instance whose setData merges.
function visit(url) {
  const [route, search = ''] = url.replace(/^\//, '').split('?')
  let definition
  global.Page = (d) => { definition = d }
  freshRequire(`${route}.js`)
  const query = Object.fromEntries(search.split('&').filter(Boolean).map((pair) => pair.split('=')))
  const page = { ...definition, data: structuredClone(definition.data) }
  page.setData = (patch) => { Object.assign(page.data, patch) }
  return { page, loaded: Promise.resolve(page.onLoad && page.onLoad(query)) }
}

async function toOrderPage(wx) {
  const products = visit('/pages/products/products')
  await products.loaded
  assert.equal(products.page.data.error, '')
  const first = products.page.data.products[0]
  assert.match(first.price, /^¥\d+\.\d{2}$/)
  products.page.onChoose({ currentTarget: { dataset: { id: first.id } } })
  const order = visit(wx.standIn.log.navigations.at(-1))
  await order.loaded
  assert.equal(order.page.data.product.id, first.id)
  return order.page
}

describe('pages', { timeout: 60000 }, () => {
  test('products → order → a double tap on Buy → status: one order, paid', async () => {
    const wx = createStandInWx(backend)
    launch(wx, { useSimulator: false })
    const orderPage = await toOrderPage(wx)
    orderPage.onQuantity({ detail: { value: '2' } })
    assert.equal(orderPage.data.total, `¥${(orderPage.data.product.price_fen * 2 / 100).toFixed(2)}`)

    await Promise.all([orderPage.onBuy(), orderPage.onBuy()])

    assert.equal(orderPage.data.error, '')
    const redirects = wx.standIn.log.navigations.filter((u) => u.startsWith('/pages/status/'))
    assert.equal(redirects.length, 1)
    assert.match(redirects[0], /outcome=paid$/)
    const status = visit(redirects[0])
    await status.loaded
    assert.equal(status.page.data.order.statusText, 'Paid')
    assert.equal(status.page.data.order.quantity, 2)
    assert.equal(status.page.data.payable, false)
    assert.equal((await serverOrders(backend, wx.getStorageSync(TOKEN_KEY))).length, 1)
  })

  test('cancel on the payment sheet → status page offers "Pay now" → paid', async () => {
    const wx = createStandInWx(backend)
    launch(wx, { useSimulator: false })
    const orderPage = await toOrderPage(wx)
    wx.standIn.behaviour.payments.push('cancel')

    await orderPage.onBuy()

    const status = visit(wx.standIn.log.navigations.at(-1))
    await status.loaded
    assert.match(status.page.data.note, /cancelled/)
    assert.equal(status.page.data.payable, true)
    assert.equal(status.page.data.order.status, 'NOTPAY')

    await status.page.onPay()

    assert.equal(status.page.data.note, 'Paid. Thank you!')
    assert.equal(status.page.data.order.status, 'SUCCESS')
    assert.equal(status.page.data.payable, false)
  })

  test('simulator mode (the config switch): codes and payment come from /sim, never wx.login or wx.requestPayment', async () => {
    const wx = createStandInWx(backend)
    wx.login = () => { throw new Error('wx.login must not be called in simulator mode') }
    wx.requestPayment = () => { throw new Error('wx.requestPayment must not be called in simulator mode') }
    const app = launch(wx, { useSimulator: true })
    const orderPage = await toOrderPage(wx)

    wx.standIn.behaviour.modalConfirm = false
    await orderPage.onBuy()
    assert.match(wx.standIn.log.navigations.at(-1), /outcome=cancelled$/)
    wx.standIn.behaviour.modalConfirm = true
    await orderPage.onBuy()

    assert.match(wx.standIn.log.navigations.at(-1), /outcome=paid$/)
    assert.equal(wx.standIn.log.modals.length, 2)
    assert.equal(wx.standIn.log.payments.length, 0)
    const orders = await serverOrders(backend, wx.getStorageSync(TOKEN_KEY))
    assert.deepEqual(orders.map((o) => o.status), ['SUCCESS']) // the cancelled order, resumed
    // A relaunch logs in as the same simulated user, so the order is still theirs.
    await app.api.login()
    assert.equal((await app.api.listOrders()).items[0].out_trade_no, orders[0].out_trade_no)
  })
})
