"""The payment-gateway port's adapters: WeChat Pay API v2 and v3 behind ``app.gateway``.

They translate between the port's types and the protocol package (``app.wechat``: wire
models, signing, the HTTP clients), which imports neither the port nor a domain package.
"""
