"""Wire protocols: one module per protocol (openai_chat, openai_responses, anthropic, gemini),
plus shared SSE framing (sse), OpenAI error/model-list shapes (openai_common) and the shared
inspector interface and passthrough helpers (base)."""
