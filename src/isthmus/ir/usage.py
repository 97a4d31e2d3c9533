"""Token usage in one normalised shape.

``input_tokens`` counts only prompt tokens billed at the plain input rate: cache reads and cache
writes are counted apart. Protocols that fold cache reads into the prompt count (OpenAI, Gemini)
are unfolded by their codecs, so the same request costs the same whichever protocol reported it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0  # already included in output_tokens; kept for reporting and pricing

    @property
    def prompt_tokens(self) -> int:
        """Every prompt token, whatever rate it is billed at."""
        return (
            self.input_tokens
            + self.cache_read_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
        )

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens

    def is_empty(self) -> bool:
        return self.prompt_tokens == 0 and self.output_tokens == 0

    def merge_max(self, other: Usage) -> None:
        """Fold a later usage report into this one (streams repeat cumulative counts)."""
        self.input_tokens = max(self.input_tokens, other.input_tokens)
        self.output_tokens = max(self.output_tokens, other.output_tokens)
        self.cache_read_tokens = max(self.cache_read_tokens, other.cache_read_tokens)
        self.cache_write_5m_tokens = max(self.cache_write_5m_tokens, other.cache_write_5m_tokens)
        self.cache_write_1h_tokens = max(self.cache_write_1h_tokens, other.cache_write_1h_tokens)
        self.reasoning_tokens = max(self.reasoning_tokens, other.reasoning_tokens)
