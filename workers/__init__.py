"""Celery: the app, its configuration, and thin tasks that take ids or paths and call plain functions."""
