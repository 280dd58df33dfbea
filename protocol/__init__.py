"""parkrelay's four-phase cross-chain protocol as pure code: no I/O, no clock, no randomness.

``protocol/SPEC.md`` is the normative text; each module names the section it implements.
"""
