"""hamflow.config"""
