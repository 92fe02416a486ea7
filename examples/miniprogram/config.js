'use strict'

module.exports = {
  // Where the backend is. In production an https:// domain listed under the mini-program's
  // "request legal domains" (request 合法域名) on mp.weixin.qq.com.
  apiBase: 'http://127.0.0.1:8000',
  // The one switch.
  // true: the backend is `make run` with its local WeChat simulator at /sim. Login codes come
  //   from the simulator's control API and payment happens on the simulator (a confirm dialog),
  //   because real WeChat's codes and payments cannot reach it.
  // false: a real backend configured with your AppID and merchant: wx.login, wx.checkSession
  //   and wx.requestPayment, as in production.
  useSimulator: true,
}
