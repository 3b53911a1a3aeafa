"""The bindings and the request handler: HTTP (JSON-RPC, REST; composed in
`app.py` with the agent card, auth, limits and health) and gRPC
(`grpc_server.py`) over one handler (`handler.py`), whose send gate applies the
submission rules before dispatch (execution/) takes over; the web console."""
