"""hamflow.graph"""
