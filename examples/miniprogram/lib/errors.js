'use strict'

// What each error code of the backend's envelope ({"error": {"code", "message"}}) means to the
// person holding the phone. The server's own `message` is for developers (logs, DevTools
// console); users see these. Translate here.
const USER_MESSAGES = {
  SESSION_MISSING: 'Please sign in again.',
  SESSION_INVALID: 'Please sign in again.',
  SESSION_EXPIRED: 'Please sign in again.',
  INVALID_CODE: 'WeChat sign-in did not work. Please try again.',
  LOGIN_BLOCKED: 'WeChat does not allow this account to sign in here.',
  WECHAT_LOGIN_FAILED: 'WeChat sign-in did not work. Please try again.',
  RATE_LIMITED: 'Too many requests right now. Please wait a minute and try again.',
  PRODUCT_NOT_FOUND: 'This product is no longer on sale.',
  AMOUNT_TOO_LARGE: 'That is more than one payment can cover. Please order fewer.',
  ORDER_NOT_FOUND: 'We could not find this order.',
  ORDER_NOT_PAYABLE: 'This order can no longer be paid (it is paid, closed or expired).',
  IDEMPOTENCY_KEY_REUSED: 'Your order changed while it was being placed. Please try again.',
  CLOSE_TOO_EARLY: 'An order can be cancelled only 5 minutes after it was placed.',
  VALIDATION_ERROR: 'Something in the order was not valid. Please check it and try again.',
  WECHAT_REJECTED: 'WeChat Pay did not accept the order. Please try again later.',
  WECHAT_UNAVAILABLE: 'WeChat Pay is not responding right now. Please try again shortly.',
  DATABASE_UNAVAILABLE: 'The shop is busy right now. Please try again shortly.',
  NETWORK: 'No connection to the shop. Check your network and try again.',
}
const FALLBACK = 'Something went wrong. Please try again.'

class ApiError extends Error {
  // status: the HTTP status (0 when no answer arrived); code: the envelope's code;
  // message: the server's message (for developers); userMessage: for the user.
  constructor({ status, code, message, retryAfterMs = null }) {
    super(message || code)
    this.name = 'ApiError'
    this.status = status
    this.code = code
    this.retryAfterMs = retryAfterMs
    this.userMessage = userMessage(code)
  }
}

function userMessage(code) {
  return USER_MESSAGES[code] || FALLBACK
}

function messageOf(error) {
  return error instanceof ApiError ? error.userMessage : FALLBACK
}

function isSessionError(error) {
  return error instanceof ApiError && error.status === 401 && /^SESSION_/.test(error.code)
}

// A 4xx other than 401/429 is the final answer to this request: retrying it changes nothing.
function isFinal(error) {
  return error instanceof ApiError && error.status >= 400 && error.status < 500 &&
    error.status !== 401 && error.status !== 429
}

function errorFromResponse(response) {
  const body = response.data && typeof response.data === 'object' ? response.data.error : null
  const status = response.statusCode
  return new ApiError({
    status,
    code: (body && body.code) || `HTTP_${status}`,
    message: (body && body.message) || `HTTP ${status}`,
    retryAfterMs: status === 429 ? retryAfterMs(response.header) : null,
  })
}

// Retry-After in seconds (the only form the backend sends); 1 s when absent or unreadable.
function retryAfterMs(header) {
  const name = Object.keys(header || {}).find((key) => key.toLowerCase() === 'retry-after')
  const seconds = name === undefined ? NaN : Number(header[name])
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : 1000
}

function networkError(failure) {
  const detail = failure && failure.errMsg ? failure.errMsg : String(failure)
  return new ApiError({ status: 0, code: 'NETWORK', message: detail })
}

module.exports = {
  ApiError,
  USER_MESSAGES,
  errorFromResponse,
  isFinal,
  isSessionError,
  messageOf,
  networkError,
  userMessage,
}
