"""The neutral representation every protocol decodes into and encodes from."""

from isthmus.ir.protocol import Operation, Protocol
from isthmus.ir.usage import Usage

__all__ = ["Operation", "Protocol", "Usage"]
