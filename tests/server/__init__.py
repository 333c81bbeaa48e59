"""Tests of the local server (a package, so that its test modules may share names with tests/ ones)."""
