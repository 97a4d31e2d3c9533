"""Prometheus metrics in the text exposition format, kept in plain counters (no client library on
the hot path: an increment is a dict update)."""

from __future__ import annotations

from collections import defaultdict

_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


class Metrics:
    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, str, int], int] = defaultdict(int)
        self.attempts: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.latency_buckets: defaultdict[str, list[int]] = defaultdict(lambda: [0] * (len(_BUCKETS_MS) + 1))
        self.latency_sum: defaultdict[str, float] = defaultdict(float)
        self.tokens: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.in_flight = 0
        self.dropped_records = 0

    def observe_request(self, protocol: str, model: str, status: int, latency_ms: float) -> None:
        self.requests[(protocol, model, status)] += 1
        buckets = self.latency_buckets[protocol]
        for i, bound in enumerate(_BUCKETS_MS):
            if latency_ms <= bound:
                buckets[i] += 1
                break
        else:
            buckets[-1] += 1
        self.latency_sum[protocol] += latency_ms

    def render(self, extra: dict[str, float] | None = None) -> bytes:
        lines = ["# TYPE isthmus_requests_total counter"]
        for (protocol, model, status), n in sorted(self.requests.items()):
            lines.append(
                f'isthmus_requests_total{{protocol="{protocol}",model="{_esc(model)}",status="{status}"}} {n}'
            )
        lines.append("# TYPE isthmus_attempts_total counter")
        for (candidate, result), n in sorted(self.attempts.items()):
            lines.append(f'isthmus_attempts_total{{candidate="{_esc(candidate)}",result="{result}"}} {n}')
        lines.append("# TYPE isthmus_request_duration_ms histogram")
        for protocol, buckets in sorted(self.latency_buckets.items()):
            cumulative = 0
            for bound, n in zip((*_BUCKETS_MS, "+Inf"), buckets, strict=True):
                cumulative += n
                lines.append(
                    f'isthmus_request_duration_ms_bucket{{protocol="{protocol}",le="{bound}"}} {cumulative}'
                )
            lines.append(
                f'isthmus_request_duration_ms_sum{{protocol="{protocol}"}} {self.latency_sum[protocol]:.3f}'
            )
            lines.append(f'isthmus_request_duration_ms_count{{protocol="{protocol}"}} {cumulative}')
        lines.append("# TYPE isthmus_tokens_total counter")
        for (model, kind), n in sorted(self.tokens.items()):
            lines.append(f'isthmus_tokens_total{{model="{_esc(model)}",kind="{kind}"}} {n}')
        lines.append("# TYPE isthmus_in_flight gauge")
        lines.append(f"isthmus_in_flight {self.in_flight}")
        lines.append("# TYPE isthmus_dropped_records_total counter")
        lines.append(f"isthmus_dropped_records_total {self.dropped_records}")
        for name, value in sorted((extra or {}).items()):
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name} {value}")
        return ("\n".join(lines) + "\n").encode()


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
