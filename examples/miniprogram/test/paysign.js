'use strict'

// How WeChat's client checks the paySign it is handed, before it shows the payment sheet.
// v2 (PROTOCOL.md §3, §4): MD5 or HMAC-SHA256 with the merchant's APIv2 key over appId,
// nonceStr, package, signType and timeStamp, sorted, with "&key=<APIv2 key>" appended.
// v3 (PROTOCOL.md §8.4): RSA-SHA256 with the merchant's private key over
// "appId\ntimeStamp\nnonceStr\npackage\n", checked here with the merchant's public key.

const crypto = require('node:crypto')

function v2PaySign(appId, params, apiKey) {
  const fields = { appId, nonceStr: params.nonceStr, package: params.package,
    signType: params.signType, timeStamp: params.timeStamp }
  const text = Object.keys(fields).sort()
    .filter((name) => fields[name] !== undefined && fields[name] !== '')
    .map((name) => `${name}=${fields[name]}`).join('&') + `&key=${apiKey}`
  if (params.signType === 'HMAC-SHA256') {
    return crypto.createHmac('sha256', apiKey).update(text, 'utf8').digest('hex').toUpperCase()
  }
  return crypto.createHash('md5').update(text, 'utf8').digest('hex').toUpperCase()
}

function v3Message(appId, params) {
  return `${appId}\n${params.timeStamp}\n${params.nonceStr}\n${params.package}\n`
}

// Returns null when the params would be accepted, else why not.
function payParamsProblem(params, { appId, apiKey, merchantPublicKeyPem }) {
  for (const name of ['timeStamp', 'nonceStr', 'package', 'signType', 'paySign']) {
    if (typeof params[name] !== 'string' || params[name] === '') return `${name} missing or not a string`
  }
  // A string of Unix seconds; milliseconds are a classic client bug (PROTOCOL.md §4).
  if (!/^\d{10}$/.test(params.timeStamp)) return 'timeStamp is not 10 digits of seconds'
  if (params.signType === 'RSA') {
    const ok = crypto.verify('RSA-SHA256', Buffer.from(v3Message(appId, params)),
      merchantPublicKeyPem, Buffer.from(params.paySign, 'base64'))
    return ok ? null : 'paySign does not verify with the merchant public key'
  }
  if (params.signType !== 'MD5' && params.signType !== 'HMAC-SHA256') return 'unknown signType'
  const expected = Buffer.from(v2PaySign(appId, params, apiKey))
  const given = Buffer.from(params.paySign)
  const ok = expected.length === given.length && crypto.timingSafeEqual(expected, given)
  return ok ? null : 'paySign does not verify with the merchant key'
}

module.exports = { payParamsProblem, v2PaySign, v3Message }
