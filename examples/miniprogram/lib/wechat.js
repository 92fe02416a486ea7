'use strict'

// The WeChat half of the flow behind one interface, so the config switch picks it:
// - realWeChat: wx.login, wx.checkSession, wx.requestPayment (a real backend, real WeChat);
// - simulatorWeChat: the backend's local WeChat simulator (`make run`, mounted at /sim), whose
//   control API mints the login codes and takes the payment. Real WeChat's codes and payments
//   cannot reach a simulator, so against `make run` this is the only way through.
// requestPayment resolves { ok: true }, { cancelled: true } or { failed: true, errMsg }.

const { ApiError } = require('./errors')
const { wxCall } = require('./wxcall')

function realWeChat(wx) {
  return {
    async login() {
      try {
        return (await wxCall(wx, 'login', {})).code
      } catch (failure) {
        throw loginFailed(failure)
      }
    },
    checkSession() {
      return new Promise((resolve) => {
        wx.checkSession({ success: () => resolve(true), fail: () => resolve(false) })
      })
    },
    requestPayment(payParams) {
      // Exactly what the server returned, untouched: timeStamp is a string of seconds and
      // every field is covered by paySign (PROTOCOL.md §4, §8.4).
      return wxCall(wx, 'requestPayment', { ...payParams }).then(
        () => ({ ok: true }),
        (failure) => paymentFailure(failure),
      )
    },
  }
}

const SIM_OPENID_KEY = 'wxpay.simulator.openid'

function simulatorWeChat(wx, apiBase) {
  const control = `${apiBase.replace(/\/+$/, '')}/sim/_control`

  async function post(path, data) {
    const response = await wxCall(wx, 'request', {
      url: control + path, method: 'POST', data, header: { 'Content-Type': 'application/json' },
    })
    if (response.statusCode !== 200) {
      throw new Error(`simulator ${path}: HTTP ${response.statusCode} ${JSON.stringify(response.data)}`)
    }
    return response.data
  }

  return {
    async login() {
      // The same simulated user on every login from this device, as WeChat's openid is.
      const openid = wx.getStorageSync(SIM_OPENID_KEY) || undefined
      try {
        const minted = await post('/login-code', openid ? { openid } : {})
        wx.setStorageSync(SIM_OPENID_KEY, minted.openid)
        return minted.code
      } catch (failure) {
        throw loginFailed(failure)
      }
    },
    checkSession: () => Promise.resolve(true), // the simulator has no client-side session
    async requestPayment(payParams) {
      const prepayId = String(payParams.package).replace(/^prepay_id=/, '')
      const choice = await wxCall(wx, 'showModal', {
        title: 'Simulated WeChat Pay',
        content: 'Pay this order on the local simulator?',
        confirmText: 'Pay',
        cancelText: 'Cancel',
      })
      if (!choice.confirm) return { cancelled: true }
      try {
        await post('/pay', { prepay_id: prepayId, result: 'SUCCESS' })
        return { ok: true }
      } catch (failure) {
        return { failed: true, errMsg: String(failure.message || failure) }
      }
    },
  }
}

function paymentFailure(failure) {
  const errMsg = (failure && failure.errMsg) || String(failure)
  // "requestPayment:fail cancel": the user closed the sheet; the order stays payable.
  return /cancel/.test(errMsg) ? { cancelled: true } : { failed: true, errMsg }
}

function loginFailed(failure) {
  const detail = (failure && (failure.errMsg || failure.message)) || String(failure)
  return new ApiError({ status: 0, code: 'WECHAT_LOGIN_FAILED', message: detail })
}

function wechatFor(wx, config) {
  return config.useSimulator ? simulatorWeChat(wx, config.apiBase) : realWeChat(wx)
}

module.exports = { realWeChat, simulatorWeChat, wechatFor }
