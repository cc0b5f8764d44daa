"""Say what the evidence says: no shipped text (README, docs, templates, the prompts' wording in the code) claims
that a routine prevents injury; the routines' and the model's docs cite Taddei 2020, Leppänen 2024 and
Kliethermes 2021 with their effect sizes and limits; every rendered post-run prompt keeps its wellness-advice
line, on every channel form."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from factories import parsed_run, store_runs
from sqlalchemy import select

from recommender.messages import build_message
from recommender.routines import WELLNESS_DISCLAIMER
from stridecare.db.models import Athlete, Delivery, Prompt
from stridecare.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]

# Claims a text must never make: that a routine (or the product) prevents, cuts, or protects from injury.
CLAIMS = [
    re.compile(r"\bprevent", re.IGNORECASE),
    re.compile(r"\b(reduces?|lowers?|cuts?|decreases?)\s+(your\s+|the\s+)?(risk\s+of\s+)?(an?\s+)?injur", re.I),
    re.compile(r"\binjury[- ](proof|free)", re.IGNORECASE),
    re.compile(r"\bprotects?\s+(you\s+|your\s+feet\s+)?(from|against)\s+injur", re.IGNORECASE),
    re.compile(r"\bavoid(s|ing)?\s+(an?\s+)?injur", re.IGNORECASE),
    re.compile(r"\bstays?\s+injury", re.IGNORECASE),
]
# Exact lines allowed to contain a pattern: a cited paper's own title, which we quote and do not claim.
CITED_TITLES = ("Gabbett TJ (2016). The training–injury prevention paradox.",)


def shipped_texts() -> list[Path]:
    """What a user or runner reads: README, ARCHITECTURE, docs, every template, and the code that words prompts,
    pages and command help (string literals live there)."""
    files = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for package in ("recommender", "delivery", "stridecare_app", "workers"):
        for path in sorted((ROOT / package).rglob("*")):
            if path.suffix in {".py", ".j2", ".html", ".txt", ".md"} and "__pycache__" not in path.parts:
                files.append(path)
    return files


def claims_in(text: str) -> list[str]:
    found = []
    for line in text.splitlines():
        if any(title in line for title in CITED_TITLES):
            continue
        for pattern in CLAIMS:
            if match := pattern.search(line):
                found.append(f"{match.group(0)!r} in: {line.strip()[:160]}")
    return found


def test_the_patterns_catch_a_claim_and_pass_the_honest_wording() -> None:
    for claim in (
        "These routines prevent plantar fasciitis.",
        "Rolling out reduces your risk of injury.",
        "Stay injury-free with daily toe spreads",
        "Balance work protects you against injuries",
        "toe yoga: avoid injuries this season",
    ):
        assert claims_in(claim), claim
    for honest in (
        "an ankle-and-foot programme did not reduce overuse injuries",
        "general wellness advice, not medical advice",
        "each +1 step/min went with about 5 % lower risk of a bone stress injury",
    ):
        assert not claims_in(honest), honest


def test_no_shipped_text_claims_a_routine_prevents_injury() -> None:
    files = shipped_texts()
    assert len(files) > 50 and ROOT / "docs" / "routines.md" in files
    offences = [f"{p.relative_to(ROOT)}: {c}" for p in files for c in claims_in(p.read_text(encoding="utf-8"))]
    assert offences == []


@pytest.mark.parametrize("doc", ["docs/routines.md", "docs/foot-load-model.md"])
def test_the_docs_cite_the_studies_with_their_effect_sizes_and_limits(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    flat = " ".join(text.split())
    for cited in ("Taddei", "Leppänen", "Kliethermes"):
        assert cited in text, f"{doc} does not cite {cited}"
    # Taddei 2020: the effect, when it appeared, and adherence halving
    assert "2.42" in flat and "1.98–3.62" in flat and "4–8 months" in flat
    assert re.search(r"about 49 %|about half", flat)
    # Leppänen 2024: no reduction of overuse injuries in novices, more acute ones
    assert re.search(r"did \*{0,2}not\*{0,2} reduce overuse injuries", flat) and "3.60" in flat
    # Kliethermes 2021: +1 step/min, about 5 % lower bone-stress-injury risk, an association
    assert "+1 step/min" in flat and "5 %" in flat and "0.91–0.98" in flat
    assert re.search(r"association", flat, re.IGNORECASE)


def test_every_post_run_prompt_keeps_its_wellness_line_on_every_channel(rt: Runtime) -> None:
    now = rt.now()
    store_runs(rt.db, rt.settings, "anna", [parsed_run(now - timedelta(hours=2), key="fresh")], now)
    with rt.db.transaction() as s:
        anna = s.scalars(select(Athlete).where(Athlete.name == "anna")).one()
        prompt = s.scalars(select(Prompt).where(Prompt.kind == "post_run")).one()
        [delivery] = s.scalars(select(Delivery).where(Delivery.prompt_id == prompt.id)).all()
        for channel in ("console", "email", "webhook", "push"):
            delivery.channel = channel  # the same prompt rendered as each channel would get it
            message = build_message(rt, s, delivery, prompt, anna)
            flat_text = " ".join(message.text.split())
            assert WELLNESS_DISCLAIMER in flat_text, channel
            assert "wellness advice, not medical advice" in " ".join(message.html.split()), channel
            assert not claims_in(message.text) and not claims_in(message.html), channel
        s.rollback()
