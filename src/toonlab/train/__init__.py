"""toonlab.train"""
