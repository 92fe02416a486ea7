'use strict'

const { messageOf } = require('../../lib/errors')
const { yuan } = require('../../lib/format')

const MAX_QUANTITY = 999 // the server's limit

Page({
  data: { product: null, quantity: 1, total: '', busy: false, error: '' },

  async onLoad(query) {
    const productId = Number(query.productId)
    try {
      const products = await getApp().api.listProducts()
      const product = products.find((p) => p.id === productId)
      if (!product) {
        this.setData({ error: 'This product is no longer on sale.' })
        return
      }
      this.setData({ product, total: yuan(product.price_fen) })
    } catch (error) {
      this.setData({ error: messageOf(error) })
    }
  },

  onQuantity(event) {
    const quantity = Math.min(MAX_QUANTITY, Math.max(1, Math.floor(Number(event.detail.value)) || 1))
    this.setData({ quantity, total: yuan(this.data.product.price_fen * quantity) })
  },

  // A second tap while the first is under way does nothing here, and purchases.buy would
  // hand it the first tap's purchase anyway (same promise, same Idempotency-Key).
  async onBuy() {
    if (this.data.busy || !this.data.product) return
    this.setData({ busy: true, error: '' })
    try {
      const app = getApp()
      await app.ready
      const result = await app.purchases.buy(this.data.product.id, this.data.quantity)
      this.setData({ busy: false })
      const no = encodeURIComponent(result.order.out_trade_no)
      wx.redirectTo({ url: `/pages/status/status?no=${no}&outcome=${result.outcome}` })
    } catch (error) {
      this.setData({ busy: false, error: messageOf(error) })
    }
  },
})
