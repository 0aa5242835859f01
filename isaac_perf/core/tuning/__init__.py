"""Tuning: offline search, the pipeline plant model, the knob tables, the advisor and the closed-loop
controller, QoS advice, params-file output.
"""
