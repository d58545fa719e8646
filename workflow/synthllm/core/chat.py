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


# a plain-text stand-in for an answer: what the template writes after it closes the turn
_ANSWER_MARK = "synthllm answer mark"


def turn_end_token(tokenizer) -> int | None:
    """The special token the chat template closes an assistant turn with (Llama-3's
    `<|eot_id|>`, ChatML's `<|im_end|>`); None when what follows the turn is no special
    token of the tokenizer (a model trained on it could not stop on one token)."""
    text = tokenizer.apply_chat_template(sft_messages("question", _ANSWER_MARK, ""), tokenize=False)
    after = text[text.rindex(_ANSWER_MARK) + len(_ANSWER_MARK) :]
    closing = [
        (len(token), token_id)
        for token, token_id in tokenizer.get_added_vocab().items()
        if after.startswith(token)
    ]
    return max(closing)[1] if closing else None


def end_of_turn_ids(tokenizer) -> list[int]:
    """The token ids that end a model's answer under its chat template: the tokenizer's eos
    and the template's turn end. Training teaches the model to emit the turn end (Llama-3's
    `<|eot_id|>`, where the base model's only end token is `<|end_of_text|>`), so generation
    must stop on it too, or it runs on to max_tokens."""
    ids = {tokenizer.eos_token_id, turn_end_token(tokenizer)}
    return sorted(i for i in ids if i is not None)
