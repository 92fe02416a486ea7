'use strict'

// The stand-in's paySign check against the published vectors: a check that accepted anything
// would make the "bad paySign is refused" case meaningless.

const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const { test } = require('node:test')

const { payParamsProblem, v2PaySign, v3Message } = require('./paysign')

const OURS = { // PROTOCOL.md §4.2
  timeStamp: '1700000000',
  nonceStr: 'a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6',
  package: 'prepay_id=wx20231115061320123456789abcdef0000',
}
const OURS_KEY = '0123456789abcdefghijklmnopqrstuv'

test('v2 paySign matches the official example (PROTOCOL.md §4.1)', () => {
  const params = { timeStamp: '1490840662', nonceStr: '5K8264ILTKCH16CQ2502SI8ZNMTM67VS',
    package: 'prepay_id=wx2017033010242291fcfe0db70013231072', signType: 'MD5' }
  assert.equal(v2PaySign('wxd678efh567hg6787', params, 'qazwsxedcrfvtgbyhnujmikolp111111'),
    '22D9B4E54AB1950F51E0649E8810ACD6')
})

test('v2 MD5 and HMAC-SHA256 paySign match the worked example (PROTOCOL.md §4.2)', () => {
  assert.equal(v2PaySign('wx1234567890abcdef', { ...OURS, signType: 'MD5' }, OURS_KEY),
    '8F0E4CC1AEF70CF9C3B544AC9E4813C5')
  assert.equal(v2PaySign('wx1234567890abcdef', { ...OURS, signType: 'HMAC-SHA256' }, OURS_KEY),
    '715A20A3BF78BBFB0FC793F8C84AC0CC52F1676876FD7369A07A98D9CF157DA0')
})

test('the v2 check accepts the right sign and refuses a changed field, key or timestamp', () => {
  const merchant = { appId: 'wx1234567890abcdef', apiKey: OURS_KEY }
  const good = { ...OURS, signType: 'MD5', paySign: '8F0E4CC1AEF70CF9C3B544AC9E4813C5' }
  assert.equal(payParamsProblem(good, merchant), null)
  assert.match(payParamsProblem({ ...good, nonceStr: 'x' + good.nonceStr.slice(1) }, merchant), /paySign/)
  assert.match(payParamsProblem(good, { ...merchant, apiKey: 'k'.repeat(32) }), /paySign/)
  assert.match(payParamsProblem(good, { ...merchant, appId: 'wx0000000000000000' }), /paySign/)
  assert.match(payParamsProblem({ ...good, timeStamp: '1700000000000' }, merchant), /10 digits/)
  assert.match(payParamsProblem({ ...good, paySign: undefined }, merchant), /paySign missing/)
})

test('the v3 check verifies RSA over the four lines and refuses any change', () => {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
  const appId = 'wx1234567890abcdef'
  const params = { ...OURS, signType: 'RSA' }
  assert.equal(v3Message(appId, params),
    'wx1234567890abcdef\n1700000000\na1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6\nprepay_id=wx20231115061320123456789abcdef0000\n')
  params.paySign = crypto.sign('RSA-SHA256', Buffer.from(v3Message(appId, params)), privateKey).toString('base64')
  const merchant = { appId, merchantPublicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }) }

  assert.equal(payParamsProblem(params, merchant), null)
  assert.match(payParamsProblem({ ...params, package: params.package + '1' }, merchant), /paySign/)
  const other = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey
  assert.match(payParamsProblem(params, { appId, merchantPublicKeyPem: other.export({ type: 'spki', format: 'pem' }) }), /paySign/)
})
