"""Strava source: OAuth connection and token refresh, rate-limit budget, activity conversion and backfill.

Modules: :mod:`.oauth` (connect, refresh under a row lock), :mod:`.client` (stravalib clients at the
configured base URL), :mod:`.ratelimit` (budget from response headers), :mod:`.convert` (activity →
``ParsedRun``, pure) and
:mod:`.backfill` (resumable history import). Importing this package imports none of them, so the pure
converter stays cheap to import.
"""
