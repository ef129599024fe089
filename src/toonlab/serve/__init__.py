"""toonlab.serve"""
