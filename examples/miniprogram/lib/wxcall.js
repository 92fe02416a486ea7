'use strict'

// The callback-style wx API as promises: resolves with what `success` gets, rejects with what
// `fail` gets ({ errMsg }).
function wxCall(wx, name, options) {
  return new Promise((resolve, reject) => {
    wx[name]({ ...options, success: resolve, fail: reject })
  })
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

module.exports = { wxCall, sleep }
