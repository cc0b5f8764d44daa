"""The web app: done links, one-click unsubscribe, Strava connect and webhooks, health and metrics."""
