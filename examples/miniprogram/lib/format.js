'use strict'

// Fen (integers, as the server sends them) to a price for people.
function yuan(fen) {
  return `¥${(fen / 100).toFixed(2)}`
}

module.exports = { yuan }
