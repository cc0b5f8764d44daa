"""``stridecare feel [PROMPT] SCORE [--where …]``: how the feet feel, the same as a prompt's one-tap link."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy import func, select

from recommender.feedback import UnknownPrompt, find_prompt
from recommender.feel import CLINICIAN, HIGH, WHERE, FeelInputError, parse_score, record_feel, score_text
from stridecare.db.models import Athlete
from stridecare_app.cli.app import app, athlete_or_fail, fail, runtime

_HELP = f"""Say how your feet feel after a run: 0 (no discomfort) to 10 (the worst), and where if you like.

Give the post-run prompt it answers (its id from `stridecare prompts`, or its first 6 or more characters), or
leave it out to score today. The day's last answer counts. A score of {HIGH} or more, or three rising scores in a
row, makes the next prompts gentler (roll-out and mobility only, no strengthening progression); if pain persists
or worsens, see a clinician.

Examples: `stridecare feel 3f9a1c 2`, `stridecare feel 5 --where heel --athlete ana`.
"""


@app.command(help=_HELP)
def feel(
    args: Annotated[
        list[str],
        typer.Argument(metavar="[PROMPT] SCORE", help="The prompt it answers (optional) and the score, 0 to 10."),
    ],
    where: Annotated[
        str | None, typer.Option("--where", help=f"Where: {' | '.join(WHERE.values())} (optional).")
    ] = None,
    athlete: Annotated[
        str | None, typer.Option("--athlete", help="Whose feet, without a PROMPT (not needed with one athlete).")
    ] = None,
) -> None:
    if len(args) not in (1, 2):
        fail("give a SCORE from 0 to 10, or a PROMPT and a SCORE (e.g. `stridecare feel 3f9a1c 2`)")
    prompt_id = args[0] if len(args) == 2 else None
    try:
        score = parse_score(args[-1])
    except FeelInputError as exc:
        fail(f"{exc} (got {args[-1]!r})")
    rt = runtime()
    try:
        with rt.db.transaction() as session:
            if prompt_id is not None:
                prompt = find_prompt(session, prompt_id)
                who = session.get(Athlete, prompt.athlete_id)
                assert who is not None
                if athlete is not None and who.name != athlete:
                    fail(f"prompt {prompt.id[:8]} is {who.name}'s, not {athlete}'s")
            elif athlete is not None:
                who = athlete_or_fail(session, athlete)
            else:
                if (session.scalar(select(func.count(Athlete.id))) or 0) != 1:
                    fail("more than one athlete (or none): say whose feet with --athlete NAME")
                who = session.scalars(select(Athlete)).one()
            row = record_feel(session, who, score, where, rt.now(), prompt_id=prompt_id)
            line = f"recorded {score_text(row.score, row.location)} for {who.name} on {row.day.isoformat()}"
            high = row.score >= HIGH
    except (UnknownPrompt, FeelInputError) as exc:
        fail(str(exc))
    typer.echo(line)
    if high:
        typer.echo(f"{HIGH} or more: the next prompts are gentler (roll-out and mobility only). {CLINICIAN}")
