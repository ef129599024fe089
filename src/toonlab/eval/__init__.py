"""toonlab.eval"""
