"""The corpus of real answers: ``tests/corpus/<service>/<case>.json``, one documented response each.

A case records what a real service answers in one situation: HTTP status, headers and the exact
body, the request it answers (host and path, so host-dependent client code can be replayed), where
the answer comes from (``source``: official docs, ccxt source and fixtures, public issue threads),
the verdict keysentry must reach (``verdict``), and, for exchanges, the ccxt exception class the
installed ccxt raises for it on the production hostname (``ccxt_class``, re-checked by the drift
test). ``docs_silent`` says what the sources leave open and what the case assumes there.

The local fakes answer from these cases (:func:`answer`), the classifier tables point at them
(``Rule.case``), and the tests prove every case yields its verdict. Bodies may hold ``$name``
placeholders (``$ip``, ``$until_ms``, ``$now_ms``) that a fake fills in per request.
"""

from __future__ import annotations

import functools
import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CORPUS_DIR = Path(__file__).resolve().parents[1] / "tests" / "corpus"
SOURCE_KINDS = frozenset({"docs", "ccxt", "issue", "fixture"})


@dataclass(frozen=True)
class Source:
    kind: str
    ref: str


@dataclass(frozen=True)
class Case:
    """One recorded answer; ``id`` is ``<service>/<name>``."""

    id: str
    service: str
    method: str
    host: str
    path: str
    status: int
    headers: dict[str, str]
    body: str
    sources: tuple[Source, ...]
    verdict: str
    ccxt_class: str | None
    note: str
    docs_silent: str | None

    @property
    def url(self) -> str:
        return f"https://{self.host}{self.path}"

    def render(self, **fill: Any) -> str:
        """The body with its ``$placeholders`` filled (unknown ones are left as they are)."""
        return string.Template(self.body).safe_substitute({k: str(v) for k, v in fill.items()})

    def render_headers(self, **fill: Any) -> dict[str, str]:
        values = {k: str(v) for k, v in fill.items()}
        return {name: string.Template(value).safe_substitute(values) for name, value in self.headers.items()}

    @property
    def code(self) -> str | None:
        """The service's own error code in the body, for request logs."""
        try:
            body = json.loads(self.render(ip="0.0.0.0", until_ms=0, now_ms=0))
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
        for key in ("code", "retCode", "label", "error"):
            if body.get(key) is not None:
                return str(body[key])
        return None


def _parse(path: Path) -> Case:
    """One case. The 3Commas cases (tests/test_threecommas_corpus.py) keep ``source`` as one string,
    the body as JSON and the verdict under ``expect``; both shapes load."""
    raw = json.loads(path.read_text())
    request, response = raw["request"], raw["response"]
    body = response["body"]
    sources = raw["source"]
    if isinstance(sources, str):
        sources = [{"kind": "issue" if "github.com" in sources else "fixture", "ref": sources}]
    return Case(
        id=f"{path.parent.name}/{path.stem}",
        service=raw.get("service", path.parent.name),
        method=request["method"],
        host=request.get("host", ""),
        path=request["path"],
        status=int(response["status"]),
        headers=dict(response.get("headers", {})),
        body=body if isinstance(body, str) else json.dumps(body, separators=(",", ":")),
        sources=tuple(Source(s["kind"], s["ref"]) for s in sources),
        verdict=raw.get("verdict") or raw.get("expect", {}).get("verdict", "unknown"),
        ccxt_class=raw.get("ccxt_class"),
        note=raw.get("note", ""),
        docs_silent=raw.get("docs_silent"),
    )


@functools.cache
def all_cases() -> dict[str, Case]:
    """Every case, by id."""
    return {f"{path.parent.name}/{path.stem}": _parse(path) for path in sorted(CORPUS_DIR.glob("*/*.json"))}


def case(case_id: str) -> Case:
    try:
        return all_cases()[case_id]
    except KeyError:
        raise KeyError(f"no corpus case {case_id!r} under {CORPUS_DIR}") from None
