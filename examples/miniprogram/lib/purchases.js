'use strict'

// One purchase, from the tap on "Buy" until the order is paid or can no longer be paid.
// - Its Idempotency-Key is stored before the order is created and kept until the purchase
//   ends, so a double tap, a lost answer or a relaunch mid-purchase gives the same order.
// - wx.requestPayment's success only means "the user went through the sheet": the order is
//   paid when the server says SUCCESS (PROTOCOL.md §0 step 6).
// - A cancelled payment leaves the order payable; resume() asks for fresh pay params.

const { isFinal } = require('./errors')
const { sleep: realSleep } = require('./wxcall')

const PURCHASE_KEY = 'wxpay.purchase'
const PAYABLE = ['NOTPAY', 'PAYERROR']
const PAID = ['SUCCESS', 'REFUND']

function createPurchases({ wx, api, wechat, sleep = realSleep, confirmWaitMs = 2000, pollMs = 500 }) {
  const inFlight = new Map()

  // The same promise for a repeated tap while the first is still under way.
  function once(id, start) {
    if (!inFlight.has(id)) inFlight.set(id, start().finally(() => inFlight.delete(id)))
    return inFlight.get(id)
  }

  function buy(productId, quantity) {
    return once(`buy:${productId}x${quantity}`, () => placeAndPay(productId, quantity))
  }

  function resume(outTradeNo) {
    return once(`pay:${outTradeNo}`, async () => payAndConfirm(await payParams(outTradeNo)))
  }

  async function placeAndPay(productId, quantity) {
    let purchase = purchaseFor(productId, quantity)
    let order
    try {
      order = await api.createOrder(productId, quantity, purchase.key)
    } catch (error) {
      if (error.code !== 'ORDER_NOT_PAYABLE') throw ended(error)
      // Only a stored key can name an order that is no longer payable: it was paid, closed or
      // expired meanwhile. That purchase is over, and this tap starts a new one.
      purchase = newPurchase(productId, quantity)
      order = await api.createOrder(productId, quantity, purchase.key).catch((e) => { throw ended(e) })
    }
    wx.setStorageSync(PURCHASE_KEY, { ...purchase, outTradeNo: order.out_trade_no })
    return payAndConfirm(order)
  }

  async function payParams(outTradeNo) {
    try {
      return await api.payParams(outTradeNo)
    } catch (error) {
      if (error.code === 'ORDER_NOT_PAYABLE') end(outTradeNo)
      throw error
    }
  }

  async function payAndConfirm(order) {
    const result = await wechat.requestPayment(order.pay_params)
    if (result.cancelled) return { outcome: 'cancelled', order }
    if (!result.ok) return { outcome: 'failed', order, errMsg: result.errMsg }
    const confirmed = await confirm(order.out_trade_no)
    return { outcome: PAID.includes(confirmed.status) ? 'paid' : 'confirming', order: confirmed }
  }

  // After requestPayment:ok: the notify usually lands within a second; if the order is still
  // unpaid after a short wait, ask the server once to query WeChat (?sync=true).
  async function confirm(outTradeNo) {
    const deadline = Date.now() + confirmWaitMs
    let order = await api.getOrder(outTradeNo)
    while (PAYABLE.includes(order.status) && Date.now() < deadline) {
      await sleep(pollMs)
      order = await api.getOrder(outTradeNo)
    }
    if (PAYABLE.includes(order.status)) order = await api.getOrder(outTradeNo, { sync: true })
    if (!PAYABLE.includes(order.status)) end(outTradeNo)
    return order
  }

  // One purchase at a time: choosing another product or quantity starts a new one (the earlier
  // order stays payable from its status page until it expires).
  function purchaseFor(productId, quantity) {
    const stored = wx.getStorageSync(PURCHASE_KEY)
    if (stored && stored.productId === productId && stored.quantity === quantity) return stored
    return newPurchase(productId, quantity)
  }

  function newPurchase(productId, quantity) {
    // Stored before the request leaves, so that a relaunch during it reuses the key.
    const purchase = { key: newIdempotencyKey(), productId, quantity }
    wx.setStorageSync(PURCHASE_KEY, purchase)
    return purchase
  }

  // A final refusal (no such product, too large, …) ends the purchase: its key made nothing.
  // A network failure, 429 or 5xx keeps it: the order may exist, and the next tap finds it.
  function ended(error) {
    if (isFinal(error)) wx.removeStorageSync(PURCHASE_KEY)
    return error
  }

  function end(outTradeNo) {
    const stored = wx.getStorageSync(PURCHASE_KEY)
    if (stored && stored.outTradeNo === outTradeNo) wx.removeStorageSync(PURCHASE_KEY)
  }

  return { buy, resume, confirm, current: () => wx.getStorageSync(PURCHASE_KEY) || null }
}

// Unique per purchase of this user (the server scopes keys per user); at most 64 characters.
function newIdempotencyKey() {
  let random = ''
  for (let i = 0; i < 4; i += 1) random += Math.random().toString(36).slice(2, 10).padEnd(8, '0')
  return `mp-${Date.now().toString(36)}-${random}`
}

module.exports = { createPurchases, PURCHASE_KEY, newIdempotencyKey }
