"""Mini-program login: code2session, our own bearer tokens, the current user."""
