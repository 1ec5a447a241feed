"""Tests of stackful (a package so that `python -m tests.stress` runs the stress profile)."""
