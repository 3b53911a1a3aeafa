"""The web console: static files served by the runtime at /console (see routes.py)."""
