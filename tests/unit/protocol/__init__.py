"""tests.unit.protocol: unit tests of the pure protocol package."""
