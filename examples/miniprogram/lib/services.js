'use strict'

// What app.js builds once at launch and the pages share: the API client, the WeChat side the
// config switch picks, and purchases.

const { createApi } = require('./api')
const { createPurchases } = require('./purchases')
const { wechatFor } = require('./wechat')

function createServices(wx, config, overrides = {}) {
  const wechat = overrides.wechat || wechatFor(wx, config)
  const api = createApi({ wx, baseUrl: config.apiBase, wechat, ...overrides.api })
  const purchases = createPurchases({ wx, api, wechat, ...overrides.purchases })
  return { api, purchases, wechat }
}

module.exports = { createServices }
