"""Functional tests: each handler driven by its events/ files against moto or the emulators."""
