"""The product catalogue: the server's prices, the only prices there are."""
