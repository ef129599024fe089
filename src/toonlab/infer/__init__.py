"""toonlab.infer"""
