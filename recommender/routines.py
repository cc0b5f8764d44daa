"""The five foot-care routines (docs/routines.md): keys, titles, our own instructions, doses.

The wording is the product's own. Every prompt carries :data:`WELLNESS_DISCLAIMER`.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLL_OUT = "roll_out"
TOE_EXTENSION = "toe_extension"
TOE_ISOLATION = "toe_isolation"
TOE_SPREAD = "toe_spread"
BALANCE = "balance"

# The order routines appear in a prompt: soft tissue first, then mobility, strength, balance.
ROUTINE_ORDER: tuple[str, ...] = (ROLL_OUT, TOE_EXTENSION, TOE_SPREAD, TOE_ISOLATION, BALANCE)

WELLNESS_DISCLAIMER = (
    "This is general wellness advice, not medical advice. If you have pain, swelling or numbness, "
    "see a clinician rather than exercising through it."
)


@dataclass(frozen=True, slots=True)
class Routine:
    """One routine as shown to the athlete."""

    key: str
    title: str
    instructions: str
    dose: str


@dataclass(frozen=True, slots=True)
class BalanceLevel:
    """One step of the balance progression; ``level`` is what ``Athlete.balance_level`` stores."""

    level: int
    key: str
    title: str
    instructions: str


ROUTINES: dict[str, Routine] = {
    ROLL_OUT: Routine(
        key=ROLL_OUT,
        title="Roll out your soles",
        instructions=(
            "Put a firm ball under one foot (a lacrosse or tennis ball; a marble reaches small spots). "
            "Move it slowly from the base of the toes back to the heel and stay a few breaths on any spot "
            "that feels tender. Sit for gentle pressure, stand to press harder."
        ),
        dose="at least 1 min per foot",
    ),
    TOE_EXTENSION: Routine(
        key=TOE_EXTENSION,
        title="Big-toe extension",
        instructions=(
            "Hold the big toe with your hand and bend it up towards the shin until you feel a stretch, then "
            "hold. A useful target: with the ball of the foot down, the tip of the toe lifts about 4 cm "
            "(1.5 in) off the floor. If you already reach that, keep it with a kneeling sit on your heels, "
            "toes tucked under, using a block under the seat if needed. A stiff big toe pushes the foot to "
            "roll sideways as it leaves the ground, which hands the work to calves and knees."
        ),
        dose="3 × 30 s per foot",
    ),
    TOE_ISOLATION: Routine(
        key=TOE_ISOLATION,
        title="Big-toe isolation",
        instructions=(
            "Sit with a flat, stiff strip (a ruler, an old card) under the big toe. Lift the big toe against "
            "it, then press the toe down into the floor, keeping the other toes relaxed and flat rather than "
            "curled. This trains the toe that stabilises push-off."
        ),
        dose="2-3 sets of 10",
    ),
    TOE_SPREAD: Routine(
        key=TOE_SPREAD,
        title="Toe spread",
        instructions=(
            "Thread your fingers between your toes from the sole side and close the hand gently, the "
            "fingertips pressing into the ball of the foot. Hold, relax, repeat. Roomier toe boxes or toe "
            "spacers help toes that narrow shoes have squeezed together over the years."
        ),
        dose="10 × 5 s per foot",
    ),
    BALANCE: Routine(
        key=BALANCE,
        title="Single-leg balance",
        instructions=(
            "Stand on one foot and keep the knee and hip steady, without wobbling. Half a minute per side "
            "is a normal result for adults under 65; when it feels easy, make it harder as below."
        ),
        dose="3 × 30 s per side",
    ),
}

BALANCE_LEVELS: tuple[BalanceLevel, ...] = (
    BalanceLevel(0, "eyes_open", "eyes open", "Stand on one leg with your eyes open, near a wall or chair."),
    BalanceLevel(1, "eyes_closed", "eyes closed", "Stand on one leg with your eyes closed, within reach of support."),
    BalanceLevel(
        2,
        "unstable_surface",
        "unstable surface",
        "Stand on one leg on a rocker board or a half ball with the round side down.",
    ),
)

MAX_BALANCE_LEVEL = len(BALANCE_LEVELS) - 1


def balance_level(level: int) -> BalanceLevel:
    """The balance level for a stored level number, clamped to the known range."""
    return BALANCE_LEVELS[min(max(level, 0), MAX_BALANCE_LEVEL)]


def routine(key: str) -> Routine:
    """The routine with ``key``; KeyError for an unknown key."""
    return ROUTINES[key]
