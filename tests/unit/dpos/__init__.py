"""Unit tests of chains.dpos."""
