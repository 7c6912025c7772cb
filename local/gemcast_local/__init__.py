"""Local-only code: the stand-in servers and the local runner. Nothing in gemcast imports it."""
