"""Unit tests of chains.poc."""
