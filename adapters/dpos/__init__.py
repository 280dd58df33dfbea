"""adapters.dpos"""
