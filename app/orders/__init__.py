"""Orders: server-side pricing, unified order, pay params, query, close, expiry."""
