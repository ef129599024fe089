"""toonlab.data"""
