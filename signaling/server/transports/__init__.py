"""How connections move bytes: one module per transport.

`signaling.server.transports.ws` is the ``/ws`` WebSocket transport, the one
that owns socket I/O on the fast path.
"""
