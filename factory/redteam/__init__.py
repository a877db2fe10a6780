"""The red-team loop: attack a student, keep the attacks it fails, mutate them, and train on the fixes.

Round 0 plans `per_family` attacks of each adversarial family and puts them to the student; the
checkers judge its replies. Every later round draws mutants of the attacks that broke the student
in the round before: transform mutants (a new phrasing and a transform chain on the attack turn)
and, with a URL teacher, teacher paraphrases (factory.redteam.paraphrase); canaries and forged
values stay, so the checkers judge them the same way. At the end the correct replies to every
attack that broke the student make a training batch (output/<run>/, exported to data/): the URL
teacher's for single-turn attacks (factory.redteam.teacher), the built-in teacher's otherwise. The
attack success rate (ASR) per round, family and way of mutating is in redteam.json and redteam.md.
"""

from factory.redteam.attacks import Attack, attack_item, mutate, plan_attacks
from factory.redteam.loop import RoundResult, run_rounds
from factory.redteam.output import write_batch, write_report

__all__ = [
    "Attack",
    "RoundResult",
    "attack_item",
    "mutate",
    "plan_attacks",
    "run_rounds",
    "write_batch",
    "write_report",
]
