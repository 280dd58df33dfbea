"""adapters.common"""
