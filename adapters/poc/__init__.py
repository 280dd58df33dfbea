"""adapters.poc"""
