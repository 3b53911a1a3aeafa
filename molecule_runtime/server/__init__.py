"""The HTTP side: agent card, A2A routes, auth, health; composed in `app.py`."""
