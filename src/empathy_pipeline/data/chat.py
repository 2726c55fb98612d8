"""The dialogue chat every fine-tune, evaluation and discriminator call uses: the listener's next turn.

Each judge's and generator's own prompt lives beside the step that sends it, with its parser. Dialogue layout follows the authors' released training files: the speaker is the `user`, the
listener the `assistant`, turns alternate, and the model writes the listener's next turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the prompts need no backend
    from empathy_pipeline.llm.base import Chat

# SmolLM2's chat template inserts its own default system prompt when none is given, and that
# prompt sends the 135M model into emoji loops; an explicit listener instruction avoids it and
# is harmless for larger models.
LISTENER_SYSTEM_PROMPT = (
    "You are an empathetic listener. Reply to the speaker's last message in one or two short "
    "sentences that show you understand how they feel."
)


def dialogue_chat(context: Sequence[str], system_prompt: str | None = LISTENER_SYSTEM_PROMPT) -> Chat:
    """Chat for "write the listener's next turn": context[0] is the speaker, roles alternate."""
    chat: Chat = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for i, turn in enumerate(context):
        chat.append({"role": "user" if i % 2 == 0 else "assistant", "content": turn})
    return chat
