"""Isthmus with parts of its request path switched off, to measure what each part costs.

A variant makes functions return at once, in an exported copy of ``src/`` (never in the working
tree). Each edit names the ``def`` line it follows and fails loudly once that line is gone, so a
variant cannot silently measure the unpatched code after a refactor. Used by ``bench/ab.py REV+VARIANT``.
"""

from __future__ import annotations

from pathlib import Path

# (file under src/isthmus, the function's one-line ``def``, the statement put first in its body)
Edit = tuple[str, str, str]

_STORE = ("accounting/writer.py", "    async def _store(self, batch: list[RecordBundle]) -> None:", "return")
_SUBMIT = ("accounting/writer.py", "    def submit(self, bundle: RecordBundle) -> bool:", "return True")
_ADMIT = (
    "relay/billing.py",
    "    async def admit(self, ctx: RequestContext, protocol: Protocol, body: Mapping[str, Any]) -> None:",
    "return",
)
_FINISH = (
    "relay/billing.py",
    "    async def finish(self, ctx: RequestContext, state: GatewayState) -> None:",
    "return",
)

VARIANTS: dict[str, tuple[str, list[Edit]]] = {
    "no-store": ("usage records built and queued in batches, but no batch written", [_STORE]),
    "no-writer": ("usage records built, never handed to the writer", [_SUBMIT]),
    "no-accounting": (
        "no admission (limits, budget reservation), cost, settlement, metrics or usage record",
        [_ADMIT, _FINISH],
    ),
}


def apply(src: Path, variant: str) -> None:
    """Apply a variant's edits to the exported tree ``src`` (the directory holding ``isthmus/``)."""
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    for relative, definition, statement in VARIANTS[variant][1]:
        path = src / "isthmus" / relative
        source = path.read_text()
        line = definition + "\n"
        if source.count(line) != 1:
            raise SystemExit(f"variant {variant}: {relative} no longer has {definition.strip()!r}; update it")
        path.write_text(source.replace(line, f"{line}        {statement}\n"))
