"""Test helpers: real server processes, a real Temporal dev server, A2A clients."""
