"""Payment results: the notify URL, the audit trail, and compensation for missed notifies."""
