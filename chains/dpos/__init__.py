"""chains.dpos"""
