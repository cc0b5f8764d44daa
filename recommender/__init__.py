"""What to do about the runs: the foot-care prompts planned from their load, the messages the channels send, and
the figures, reports and data-rights exports read from what is stored.

The decisions are pure functions (``rules``, ``routines``, ``quiet_hours`` and the domain below them); the
modules around them (``planner``, ``schedule``, ``digest``, ``status`` …) read and write the database through
the session or ``Database`` their caller hands in, and ``data_rights`` writes its export files. Nothing here
talks to the network: prompts leave through the outbox (``delivery``).
"""
