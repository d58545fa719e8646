"""Stage 11, NLL (synthllm eval_nll): per-token negative log-likelihood of each benchmark's
reference solution under the checkpoint, teacher-forced with transformers: the prompt is the
same chat conversation as synthllm.stages.evaluate's, the target the assistant turn (up to and
including the template's end-of-turn tokens); prompt and padding tokens are masked.
Benchmarks without reference solutions (Gaokao 2023 En, CollegeMath) are scored on
"The final answer is $\\boxed{gold}$.". Writes `nll.parquet`: benchmark, id, target_kind
(solution | answer), tokens (int32: target tokens scored), truncated (bool), nll_sum
(float64, nats); the benchmark figure is sum(nll_sum) / sum(tokens).
"""

from __future__ import annotations

import logging

import pyarrow as pa
from tqdm import tqdm

from synthllm.core.chat import prompt_messages, sft_messages
from synthllm.core.eval_data import BENCHMARKS
from synthllm.core.files import write_counts, write_parquet
from synthllm.stages.evaluate import EvaluationError, load_problems

log = logging.getLogger(__name__)

NLL_SCHEMA = pa.schema(
    [
        ("benchmark", pa.string()),
        ("id", pa.string()),
        ("target_kind", pa.string()),
        ("tokens", pa.int32()),
        ("truncated", pa.bool_()),
        ("nll_sum", pa.float64()),
    ]
)


def nll_target(problem: dict) -> tuple[str, str]:
    """The text scored for a problem: its reference solution, else its boxed gold answer."""
    if problem["solution"]:
        return "solution", problem["solution"]
    return "answer", f"The final answer is $\\boxed{{{problem['gold']}}}$."


def encode_for_nll(
    tokenizer, problem: dict, system_prompt: str, max_tokens: int
) -> tuple[list[int], int, str, bool]:
    """Token ids of prompt + target (cut at max_tokens), the prompt length, target kind and
    whether the target was cut."""
    kind, target = nll_target(problem)
    prompt = tokenizer.apply_chat_template(
        prompt_messages(problem["question"], system_prompt),
        add_generation_prompt=True,
        tokenize=True,
    )
    full = tokenizer.apply_chat_template(
        sft_messages(problem["question"], target, system_prompt), tokenize=True
    )
    if hasattr(prompt, "input_ids"):  # transformers returns a BatchEncoding when asked to
        prompt, full = prompt["input_ids"], full["input_ids"]
    if full[: len(prompt)] != prompt:
        raise EvaluationError(
            "the chat template does not render the prompt as a prefix of the "
            f"conversation ({problem['benchmark']} {problem['id']})"
        )
    # keep at least one target token: a prompt that fills max_tokens is cut from the left
    prompt_len = min(len(prompt), max_tokens - 1)
    ids = full[len(prompt) - prompt_len :][:max_tokens]
    return ids, prompt_len, kind, len(full) - (len(prompt) - prompt_len) > max_tokens


def run_nll(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """Per-token NLL of the reference solutions under `inputs["checkpoint"]` into
    `outputs["nll"]` and `outputs["counts"]`. Settings: config keys evaluate.benchmarks,
    max_records, seed, evaluate.nll (`nll`: max_tokens, dtype) and chat.system_prompt;
    execution: evaluate.nll.batch_size (rules/11_evaluate.smk)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint, system_prompt = inputs["checkpoint"], settings["system_prompt"]
    max_tokens, dtype = settings["nll"]["max_tokens"], settings["nll"]["dtype"]
    batch_size = execution["nll"]["batch_size"]
    problems = load_problems(settings["benchmarks"], settings["max_records"], settings["seed"])
    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"{checkpoint}: transformers could not load it: {exc}") from exc
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [encode_for_nll(tokenizer, p, system_prompt, max_tokens) for p in problems]
    # longest first: similar lengths share a batch, and memory trouble shows at once
    order = sorted(range(len(problems)), key=lambda i: -len(encoded[i][0]))
    results: dict[int, float] = {}
    with torch.no_grad(), tqdm(total=len(order), desc="nll", mininterval=5.0) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(encoded[i][0]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for row, i in enumerate(batch):
                seq, prompt_len = encoded[i][0], encoded[i][1]
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
                labels[row, prompt_len : len(seq)] = torch.tensor(seq[prompt_len:])
            # logits only where a reference token is predicted (from the batch's first target
            # on): for a small model the vocabulary's logits are most of the work
            first = max(min(encoded[i][1] for i in batch) - 1, 0)
            logits = model(
                input_ids=ids,
                attention_mask=mask,
                logits_to_keep=torch.arange(first, width - 1),
            ).logits.float()
            targets = labels[:, first + 1 :]
            # rows of (position, vocabulary): the (batch, vocabulary, position) layout
            # cross_entropy also takes is many times slower on CPU
            token_nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                targets.reshape(-1),
                ignore_index=-100,
                reduction="none",
            ).view(targets.shape)
            for row, i in enumerate(batch):
                results[i] = float(token_nll[row].sum())
            bar.update(len(batch))
    rows = []
    for i, p in enumerate(problems):
        seq, prompt_len, kind, truncated = encoded[i]
        rows.append(
            {
                "benchmark": p["benchmark"],
                "id": p["id"],
                "target_kind": kind,
                "tokens": len(seq) - prompt_len,
                "truncated": truncated,
                "nll_sum": results[i],
            }
        )
    write_parquet(rows, NLL_SCHEMA, outputs["nll"])
    counts = write_counts(
        outputs["counts"],
        "eval_nll",
        len(problems),
        len(rows),
        {},
        nll=nll_table(rows),
        truncated=sum(r["truncated"] for r in rows),
    )
    for name, value in counts["nll"].items():
        log.info("%s: %.4f nats per token", name, value)
    return counts


def nll_table(rows: list[dict]) -> dict[str, float]:
    """Per benchmark: per-token NLL, sum(nll_sum) / sum(tokens)."""
    table = {}
    for name in BENCHMARKS:
        mine = [r for r in rows if r["benchmark"] == name]
        if mine:
            table[name] = sum(r["nll_sum"] for r in mine) / sum(r["tokens"] for r in mine)
    return table
