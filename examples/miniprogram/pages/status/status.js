'use strict'

const { messageOf } = require('../../lib/errors')
const { yuan } = require('../../lib/format')

const NOTES = {
  paid: 'Paid. Thank you!',
  confirming: 'WeChat is still confirming the payment. Check again in a moment.',
  cancelled: 'Payment cancelled. Your order is kept: you can pay it here until it expires.',
  failed: 'The payment did not go through. You can try again.',
}
const STATUS_TEXT = {
  NOTPAY: 'Awaiting payment',
  PAYERROR: 'Payment failed',
  SUCCESS: 'Paid',
  REFUND: 'Refunded (in part or in full)',
  CLOSED: 'Closed',
}

Page({
  data: { order: null, payable: false, note: '', busy: false, error: '' },

  onLoad(query) {
    this.outTradeNo = decodeURIComponent(query.no)
    this.setData({ note: NOTES[query.outcome] || '' })
    return this.refresh()
  },

  async refresh() {
    try {
      const app = getApp()
      await app.ready // the start-up wx.checkSession decides whether the stored token is tried
      this.show(await app.api.getOrder(this.outTradeNo))
    } catch (error) {
      this.setData({ error: messageOf(error) })
    }
  },

  // "Pay now" on an unpaid order (after a cancel, or coming back later): fresh pay params.
  async onPay() {
    if (this.data.busy) return
    this.setData({ busy: true, error: '' })
    try {
      const result = await getApp().purchases.resume(this.outTradeNo)
      this.setData({ note: NOTES[result.outcome] })
      this.show(result.order)
    } catch (error) {
      this.setData({ error: messageOf(error) })
      await this.refresh()
    } finally {
      this.setData({ busy: false })
    }
  },

  // "Check again" while WeChat is confirming: the server asks WeChat if it still has no answer.
  async onCheck() {
    try {
      const order = await getApp().purchases.confirm(this.outTradeNo)
      this.setData({ note: order.status === 'SUCCESS' ? NOTES.paid : NOTES.confirming })
      this.show(order)
    } catch (error) {
      this.setData({ error: messageOf(error) })
    }
  },

  show(order) {
    this.setData({
      order: { ...order, total: yuan(order.total_fee), statusText: STATUS_TEXT[order.status] || order.status },
      payable: order.status === 'NOTPAY' || order.status === 'PAYERROR',
    })
  },
})
