"""Tests of gemcast: see tests/README.md for the layers of the pyramid."""
