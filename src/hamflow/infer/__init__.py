"""hamflow.infer"""
