"""The Video-MME prompt, as lmms-eval's ``videomme`` task builds it (no subtitles).

Layout: the option prompt, the question, its four options one per line (they carry their letters,
``"A. ..."``), then the post-prompt, which starts with its own newline::

    Select the best answer to ... of the correct option.
    <question>
    A. ...
    B. ...
    C. ...
    D. ...

    Answer with the option's letter from the given choices directly.

The video goes before this text in the user turn of the chat template.
"""

from __future__ import annotations

from typing import Sequence

OPTION_PROMPT = (
    "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
    "Respond with only the letter (A, B, C, or D) of the correct option."
)
POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."
LETTERS = "ABCD"


def format_options(options: Sequence[str]) -> str:
    """One option per line; an option without its ``"X. "`` letter prefix gets one."""
    lines = []
    for letter, option in zip(LETTERS, options):
        text = str(option).strip()
        if not (len(text) >= 2 and text[0] == letter and text[1] in ".):"):
            text = f"{letter}. {text}"
        lines.append(text)
    return "\n".join(lines)


def build_prompt(question: str, options: Sequence[str], *, post_prompt: str = POST_PROMPT) -> str:
    """The text of one Video-MME question."""
    if len(options) != len(LETTERS):
        raise ValueError(f"options must hold {len(LETTERS)} entries, got {len(options)}")
    return f"{OPTION_PROMPT}\n{question}\n{format_options(options)}\n{post_prompt}"


def chat_messages(prompt: str) -> list[dict]:
    """A single user turn: the video, then the text (the chat template adds the default system turn)."""
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
