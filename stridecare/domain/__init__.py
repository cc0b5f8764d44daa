"""Pure domain logic: the normalised run, steps, load, flags and long runs.

Nothing in this package imports a framework or does I/O, so all of it is tested without a database.
"""
