"""JSON Schema of the protocol, generated from the frame Structs."""

from __future__ import annotations

import json

import msgspec

from .frames import CandidateData, ClientFrame, SdpData, ServerFrame

__all__ = ["schema", "schema_text"]


def schema() -> dict[str, object]:
    """One schema document: ``ClientFrame`` and ``ServerFrame`` with shared definitions."""
    # SdpData and CandidateData are what ``data`` is checked against (referenced
    # from the frames by hand: the frames keep ``data`` as the open object it is)
    (client, server, _, _), components = msgspec.json.schema_components(
        [ClientFrame, ServerFrame, SdpData, CandidateData], ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "signaling wire protocol v1",
        "description": "Generated from signaling/frames.py by 'signaling schema'; do not edit.",
        "oneOf": [
            {"title": "ClientFrame", **client},
            {"title": "ServerFrame", **server},
        ],
        "$defs": components,
    }


def schema_text() -> str:
    """The schema as the text of ``protocol/schema.json``."""
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"
