"""Connectors: account-based pull sources (intervals.icu, Garmin Connect, plugins of group
``stridecare.connectors``).

A connector lists an account's activities since a cursor and downloads each one's original file; the poller
(``poller.py``) writes the bytes under the data home and hands the file to ``ingest.service.ingest_path``,
exactly the path of a dropped file. The ledger (``ledger.py``) remembers every activity seen, so none is
downloaded twice, and keeps each account's cursor, throttle and cooldown in SQL.
"""
