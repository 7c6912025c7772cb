"""Unit tests: the gemcast package and the local runtime, no network."""
