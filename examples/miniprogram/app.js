'use strict'

const config = require('./config')
const { createServices } = require('./lib/services')

App({
  onLaunch() {
    Object.assign(this, createServices(wx, config))
    // Decide once whether the stored token is worth trying (wx.checkSession); pages wait for it.
    this.ready = this.api.start().catch(() => false)
  },
})
