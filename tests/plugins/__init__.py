"""pytest plugins of gemcast (registered in tests/conftest.py)."""
