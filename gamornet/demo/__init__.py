"""``make demo``: simulate a survey, train GaMorNet on it, and measure how well it classifies.
"""
