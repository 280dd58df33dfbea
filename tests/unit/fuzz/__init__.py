"""Fuzz harnesses (issue 15): every decoder and verifier raises only its typed errors."""
