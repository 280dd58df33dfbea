"""chains.poc"""
