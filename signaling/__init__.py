"""signaling: a WebRTC signaling server on trio (wire protocol v1).

The frames of the protocol (`signaling.frames`), their codecs
(`signaling.codec`) and errors (`signaling.errors`) are shared by the server
(`signaling.server`) and the Python client SDK (`signaling.client`).
"""

from __future__ import annotations

from .codec import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL
from .errors import CloseCode, SignalingError

__all__ = ["JSON_SUBPROTOCOL", "MSGPACK_SUBPROTOCOL", "CloseCode", "SignalingError", "__version__"]

__version__ = "0.1.0"
