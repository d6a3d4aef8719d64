"""Canvas: signatures and the workflows built from them (chain, group, chord, map, chunks).

:mod:`caraway.canvas.signature` holds :class:`Signature`, a task call in Celery's wire
form; :mod:`caraway.canvas.workflows` the composites. The one thing to know: applying a
workflow publishes only its first messages; what runs next travels inside them
(``embed.chain``/``embed.chord``) and the worker follows it.
"""

from caraway.canvas.signature import (
    Signature,
    StampingVisitor,
    maybe_signature,
    signature,
    subtask,
    to_wire,
)
from caraway.canvas.workflows import attach, chain, chord, chunks, group, xmap, xstarmap

__all__ = [
    "Signature",
    "StampingVisitor",
    "attach",
    "chain",
    "chord",
    "chunks",
    "group",
    "maybe_signature",
    "signature",
    "subtask",
    "to_wire",
    "xmap",
    "xstarmap",
]
