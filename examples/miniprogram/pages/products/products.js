'use strict'

const { messageOf } = require('../../lib/errors')
const { yuan } = require('../../lib/format')

Page({
  data: { loading: true, products: [], error: '' },

  onLoad() {
    return this.load()
  },

  onPullDownRefresh() {
    return this.load().then(() => wx.stopPullDownRefresh())
  },

  async load() {
    try {
      const products = await getApp().api.listProducts()
      const shown = products.map((p) => ({ id: p.id, name: p.name, price: yuan(p.price_fen) }))
      this.setData({ loading: false, products: shown, error: '' })
    } catch (error) {
      this.setData({ loading: false, error: messageOf(error) })
    }
  },

  onChoose(event) {
    const id = event.currentTarget.dataset.id
    wx.navigateTo({ url: `/pages/order/order?productId=${id}` })
  },
})
