"""molecule-runtime: turn any agent into an A2A server, optionally durable on Temporal."""

__version__ = "0.1.0"
