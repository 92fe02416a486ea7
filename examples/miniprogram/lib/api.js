'use strict'

// The backend's HTTP API as the pages use it: one bearer token kept in storage, a fresh
// wx.login and one new login when the server says the session is gone, bounded waits when the
// server says "too many requests", and the error envelope turned into ApiError.

const { ApiError, errorFromResponse, isSessionError, networkError } = require('./errors')
const { sleep: realSleep, wxCall } = require('./wxcall')

const TOKEN_KEY = 'wxpay.token'

const DEFAULT_LIMITS = {
  timeoutMs: 10000,
  // An unanswered request is sent again only where that is safe (reads, login with a fresh
  // code, create with its Idempotency-Key, pay-params).
  networkRetries: 2,
  networkBackoffMs: 300,
  // 429: wait as long as Retry-After says, at most this many times, and only if the wait is
  // short enough to hold the user on a spinner; otherwise say "try again later".
  rateLimitRetries: 2,
  maxRetryAfterMs: 10000,
}

function createApi({ wx, baseUrl, wechat, sleep = realSleep, limits = {} }) {
  const settings = { ...DEFAULT_LIMITS, ...limits }
  const root = baseUrl.replace(/\/+$/, '')
  let loggingIn = null

  // At start-up only: wx.checkSession says whether WeChat's session_key (and so, most likely,
  // our token issued with it) is still alive. A stored token is tried only if it is; a 401
  // later is answered with a fresh wx.login, never with checkSession (PROTOCOL.md §1.3).
  async function start() {
    if (!wx.getStorageSync(TOKEN_KEY)) return false
    if (await wechat.checkSession()) return true
    wx.removeStorageSync(TOKEN_KEY)
    return false
  }

  // One login at a time: calls that find the session gone together share one fresh code.
  function login() {
    if (!loggingIn) loggingIn = exchangeFreshCode().finally(() => { loggingIn = null })
    return loggingIn
  }

  async function exchangeFreshCode() {
    // A code is single-use and a lost answer may have used it up, so every attempt
    // (network retry or 429 retry) asks wx.login for a new one.
    const data = await send({
      method: 'POST',
      path: '/api/v1/auth/login',
      body: async () => ({ code: await wechat.login() }),
      retryNetwork: true,
    })
    wx.setStorageSync(TOKEN_KEY, data.token)
    return data.token
  }

  async function authed(request) {
    const token = wx.getStorageSync(TOKEN_KEY) || (await login())
    try {
      return await send({ ...request, token })
    } catch (error) {
      if (!isSessionError(error)) throw error
      // Once: if the new token is refused too, that is reported, not looped on.
      return send({ ...request, token: await tokenAfterRefusal(token) })
    }
  }

  async function tokenAfterRefusal(refused) {
    const current = wx.getStorageSync(TOKEN_KEY)
    if (current && current !== refused) return current // another call logged in meanwhile
    wx.removeStorageSync(TOKEN_KEY)
    return login()
  }

  async function send(request) {
    let unanswered = 0
    let throttled = 0
    for (;;) {
      const body = typeof request.body === 'function' ? await request.body() : request.body
      let response
      try {
        response = await wxCall(wx, 'request', wxRequest(request, body))
      } catch (failure) {
        if (!request.retryNetwork || unanswered >= settings.networkRetries) {
          throw networkError(failure)
        }
        unanswered += 1
        await sleep(settings.networkBackoffMs * unanswered)
        continue
      }
      if (response.statusCode >= 200 && response.statusCode < 300) return response.data
      const error = errorFromResponse(response)
      if (!shouldWaitAndRetry(error, throttled)) throw error
      throttled += 1
      await sleep(error.retryAfterMs)
    }
  }

  function shouldWaitAndRetry(error, throttled) {
    return error.status === 429 && throttled < settings.rateLimitRetries &&
      error.retryAfterMs <= settings.maxRetryAfterMs
  }

  function wxRequest({ method, path, token, headers }, body) {
    const header = { ...headers }
    if (token) header.Authorization = `Bearer ${token}`
    if (body !== undefined) header['Content-Type'] = 'application/json'
    const options = { url: root + path, method, header, timeout: settings.timeoutMs }
    if (body !== undefined) options.data = body
    return options
  }

  return {
    start,
    login,
    listProducts: () => send({ method: 'GET', path: '/api/v1/products', retryNetwork: true }),
    createOrder: (productId, quantity, idempotencyKey) => authed({
      method: 'POST',
      path: '/api/v1/orders',
      body: { product_id: productId, quantity },
      headers: { 'Idempotency-Key': idempotencyKey },
      retryNetwork: true, // safe: the same key returns the same order
    }),
    getOrder: (outTradeNo, { sync = false } = {}) => authed({
      method: 'GET',
      path: `/api/v1/orders/${encodeURIComponent(outTradeNo)}${sync ? '?sync=true' : ''}`,
      retryNetwork: true,
    }),
    listOrders: () => authed({ method: 'GET', path: '/api/v1/orders', retryNetwork: true }),
    payParams: (outTradeNo) => authed({
      method: 'POST',
      path: `/api/v1/orders/${encodeURIComponent(outTradeNo)}/pay-params`,
      retryNetwork: true, // fresh params for the same order, however often asked
    }),
  }
}

module.exports = { createApi, ApiError, TOKEN_KEY, DEFAULT_LIMITS }
