"""toonlab.nn"""
