"""Routine recommendations: the five foot-care routines and the pure rules that decide when to prompt them.

Nothing here does I/O: the worker layer gathers the facts, calls the rules and stores what they decide.
"""
