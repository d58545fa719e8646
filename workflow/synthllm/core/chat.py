"""The one conversation format shared by SFT and evaluation (paper §3-§4).

Training shows the model [system, user: question, assistant: answer]; evaluation prompts it
with [system, user: question] and the model's chat template, so what a model is tuned on
is exactly what it is asked at test time. The system prompt is config key
`chat.system_prompt` (the Qwen2.5-Math harness's chain-of-thought instruction by default);
an empty string leaves the system turn out.
"""

from __future__ import annotations


def prompt_messages(question: str, system_prompt: str) -> list[dict]:
    """The conversation up to the model's turn."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": question}]


def sft_messages(question: str, answer: str, system_prompt: str) -> list[dict]:
    """A training conversation: the prompt plus the answer as the assistant's turn."""
    return prompt_messages(question, system_prompt) + [{"role": "assistant", "content": answer}]
