"""Task execution: the A2A executor, the event emitter, and the adapter attempt runner."""
