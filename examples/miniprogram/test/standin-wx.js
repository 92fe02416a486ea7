'use strict'

// A stand-in for the `wx` object the mini-program runs against, for tests in Node.
// - wx.request: real HTTP to the running service (fetch), answered the way wx.request answers
//   ({ statusCode, data, header } to success; { errMsg: "request:fail …" } to fail).
// - wx.login: a fresh code minted by the simulator's control API, for this device's user
//   (one openid per device, as WeChat's is per user and mini-program).
// - wx.checkSession: succeeds while this device's WeChat session_key is valid.
// - wx.requestPayment: first checks the params as WeChat's client does (./paysign.js), refuses
//   bad ones, then the user pays through the simulator's control API, or cancels.
// Every call is logged on `wx.standIn.log`; `wx.standIn.behaviour` holds what the user and the
// network do next (drop an answer, tamper with one, cancel, take a while to pay).

const { payParamsProblem } = require('./paysign')

function createStandInWx(backend) {
  const control = `${backend.baseUrl}/sim/_control`
  const storage = new Map()
  const user = { openid: null, sessionKeyValid: false }
  const log = { requests: [], logins: 0, checkSessions: 0, payments: [], paid: [], modals: [], navigations: [] }
  const behaviour = {
    payments: [], // what the user does at each payment sheet: 'pay' (the default) or 'cancel'
    thinkMs: 0, // how long the user looks at the sheet before paying
    beforePay: null, // async (simOrder) => void, just before the user pays
    dropResponse: null, // (entry) => true: the service answered, the answer never arrives
    tamper: null, // (entry, response) => void: change an answer on its way to the client
    modalConfirm: true,
  }

  async function controlCall(path, body) {
    const response = await fetch(control + path, {
      method: body === undefined ? 'GET' : 'POST',
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const data = await response.json()
    return { status: response.status, data }
  }

  function request(options) {
    const { url, method = 'GET', data, header = {}, timeout = 60000, success, fail } = options
    const entry = { method, url, header: { ...header } }
    log.requests.push(entry)
    ;(async () => {
      const body = data === undefined || method === 'GET' ? undefined
        : typeof data === 'string' ? data : JSON.stringify(data)
      let response
      let text
      try {
        response = await fetch(url, { method, headers: header, body, signal: AbortSignal.timeout(timeout) })
        text = await response.text()
      } catch (error) {
        entry.failed = error.message
        fail({ errMsg: `request:fail ${error.message}` })
        return
      }
      let parsed = text
      try { parsed = JSON.parse(text) } catch { /* wx.request hands over the text as it is */ }
      Object.assign(entry, { statusCode: response.status, data: parsed,
        code: parsed && parsed.error ? parsed.error.code : undefined,
        responseHeader: Object.fromEntries(response.headers) })
      if (behaviour.dropResponse && behaviour.dropResponse(entry)) {
        entry.dropped = true
        fail({ errMsg: 'request:fail timeout' })
        return
      }
      const result = { statusCode: response.status, data: parsed,
        header: Object.fromEntries(response.headers), errMsg: 'request:ok' }
      if (behaviour.tamper) behaviour.tamper(entry, result)
      success(result)
    })()
    return { abort() {} }
  }

  function login({ success, fail }) {
    controlCall('/login-code', user.openid ? { openid: user.openid } : {}).then(({ status, data }) => {
      if (status !== 200) return fail({ errMsg: `login:fail ${JSON.stringify(data)}` })
      log.logins += 1
      user.openid = data.openid
      user.sessionKeyValid = true
      return success({ code: data.code, errMsg: 'login:ok' })
    }, (error) => fail({ errMsg: `login:fail ${error.message}` }))
  }

  function checkSession({ success, fail }) {
    log.checkSessions += 1
    setImmediate(() => (user.sessionKeyValid
      ? success({ errMsg: 'checkSession:ok' })
      : fail({ errMsg: 'checkSession:fail session time out, need relogin' })))
  }

  function requestPayment(options) {
    const params = {}
    for (const name of ['timeStamp', 'nonceStr', 'package', 'signType', 'paySign']) params[name] = options[name]
    const entry = { params }
    log.payments.push(entry)
    pay(params, entry).then(
      () => options.success({ errMsg: 'requestPayment:ok' }),
      (errMsg) => { entry.refused = errMsg; options.fail({ errMsg }) },
    )
  }

  async function pay(params, entry) {
    const problem = payParamsProblem(params, backend)
    if (problem) throw `requestPayment:fail ${problem} (stand-in's check)`
    const prepayId = params.package.replace(/^prepay_id=/, '')
    const simOrder = (await controlCall('/orders')).data.find((o) => o.prepay_id === prepayId)
    if (!simOrder) throw 'requestPayment:fail unknown prepay_id'
    if (simOrder.openid !== user.openid) throw 'requestPayment:fail the order belongs to another payer'
    if (behaviour.thinkMs) await new Promise((resolve) => setTimeout(resolve, behaviour.thinkMs))
    const choice = behaviour.payments.shift() || 'pay'
    if (choice === 'cancel') throw 'requestPayment:fail cancel'
    if (behaviour.beforePay) await behaviour.beforePay(simOrder)
    const { status, data } = await controlCall('/pay', { prepay_id: prepayId, result: 'SUCCESS' })
    if (status !== 200) throw `requestPayment:fail ${JSON.stringify(data)}`
    entry.paid = true
    log.paid.push(simOrder.out_trade_no)
  }

  const wx = {
    request,
    login,
    checkSession,
    requestPayment,
    getStorageSync: (key) => (storage.has(key) ? JSON.parse(storage.get(key)) : ''),
    setStorageSync: (key, value) => { storage.set(key, JSON.stringify(value)) },
    removeStorageSync: (key) => { storage.delete(key) },
    showModal: (options) => {
      log.modals.push(options)
      setImmediate(() => options.success({ confirm: behaviour.modalConfirm, cancel: !behaviour.modalConfirm }))
    },
    navigateTo: ({ url }) => log.navigations.push(url),
    redirectTo: ({ url }) => log.navigations.push(url),
    stopPullDownRefresh: () => {},
    standIn: { log, behaviour, user, controlCall, expireSessionKey: () => { user.sessionKeyValid = false } },
  }
  return wx
}

module.exports = { createStandInWx }
