"""hamflow.train"""
