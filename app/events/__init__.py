"""Events: the transactional outbox, signed webhooks and the event feed."""
