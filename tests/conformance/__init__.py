"""tests.conformance"""
