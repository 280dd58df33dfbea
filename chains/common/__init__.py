"""chains.common"""
