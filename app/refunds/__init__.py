"""Refunds: requested by the merchant, accepted and settled by WeChat (PROTOCOL.md §6.3-6.5)."""
