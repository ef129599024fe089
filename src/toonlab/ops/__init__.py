"""toonlab.ops"""
