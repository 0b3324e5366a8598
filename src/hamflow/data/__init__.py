"""hamflow.data"""
