"""hamflow.nn"""
