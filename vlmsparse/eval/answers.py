"""Answer extraction and scoring as lmms-eval's ``videomme`` task does them.

The reply is stripped, the usual answer lead-ins ("The best answer is", ...) are removed, a long reply
(more than 10 words) without any option letter counts as no answer, and otherwise the first capital
A-D found anywhere in the reply is the prediction. Like lmms-eval, a reply such as ``"Answer: B"`` reads
as ``"A"`` (the capital of "Answer"); Qwen2.5-VL answers with the bare letter under this prompt.
One deliberate difference: lmms-eval's lead-in list glues two pairs of phrases together by a missing
comma ("The best option is" + "The correct option is", "Best answer:" + "Best option:"), so those four
never match there; here each is removed on its own.
"""

from __future__ import annotations

import re

ANSWER_LEAD_INS = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is",
    "The correct option is",
    "Best answer:",
    "Best option:",
)
_LETTER = re.compile(r"[ABCD]")


def extract_letter(reply: str) -> str:
    """The option letter in ``reply`` (``"A"``..``"D"``), or ``""`` when there is none."""
    text = (reply or "").strip()
    for lead_in in ANSWER_LEAD_INS:
        text = text.replace(lead_in, "")
    if len(text.split()) > 10 and not _LETTER.search(text):
        return ""
    match = _LETTER.search(text)
    return match.group(0) if match else ""


def is_correct(prediction: str, answer: str) -> bool:
    """Case-insensitive letter match; an empty prediction is never correct."""
    return bool(prediction) and prediction.strip().lower() == answer.strip().lower()
