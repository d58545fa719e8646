"""Stage 8: evaluation of one checkpoint on the six benchmarks (paper §4), and the summary.

`run` (synthllm evaluate): zero-shot chain of thought, the prompt being
`synthllm.chat.prompt_messages(question, chat.system_prompt)` through the model's chat
template, greedy, `max_new_tokens`, on the generation layer (vLLM by default); a killed job
resumes from `predictions.parquet.progress.jsonl`. Writes into the checkpoint's eval folder:

- `predictions.parquet`, one row per problem: benchmark, id, question, gold, messages (the
  prompt, JSON), completion, finish_reason, extracted (the harness's normalised answer),
  correct_harness, extracted_math_verify, correct_math_verify (see synthllm.grading);
- `settings.json`: model label, budget, tokens (from the training counts), checkpoint
  folder, system prompt, sampling, engine, benchmark files with their sha256, sample size
  and seed, engine start-up and generation seconds;
- `counts.json`: problems in and out, accuracy per benchmark under both graders.

`run_nll` (synthllm eval_nll): per-token negative log-likelihood of each benchmark's reference
solution under the checkpoint, teacher-forced with transformers: the prompt is the same chat
conversation, the target the assistant turn (up to and including the template's end-of-turn
tokens); prompt and padding tokens are masked. Benchmarks without reference solutions
(Gaokao 2023 En, CollegeMath) are scored on "The final answer is $\\boxed{gold}$.". Writes
`nll.parquet`: benchmark, id, target_kind (solution | answer), tokens (int32: target tokens
scored), truncated (bool), nll_sum (float64, nats); the benchmark figure is
sum(nll_sum) / sum(tokens).

`run_summary` (synthllm eval_summary): `eval/summary.parquet` in long format (model, budget,
tokens, benchmark incl. `average` = mean of the six, metric accuracy | accuracy_harness | nll,
value; accuracy in percent), plus `summary.csv` and `summary.md` (one row per model, budget
and metric, one column per benchmark).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from synthllm.chat import prompt_messages, sft_messages
from synthllm.errors import SynthllmError
from synthllm.eval_data import BENCHMARKS, load_benchmark
from synthllm.generation import fingerprint, generate_resumable, progress_path
from synthllm.grading import grade, parse_gold_math_verify
from synthllm.io import atomic_path, write_counts, write_json, write_parquet

log = logging.getLogger(__name__)

PREDICTIONS_SCHEMA = pa.schema(
    [
        ("benchmark", pa.string()),
        ("id", pa.string()),
        ("question", pa.string()),
        ("gold", pa.string()),
        ("messages", pa.string()),
        ("completion", pa.string()),
        ("finish_reason", pa.string()),
        ("extracted", pa.string()),
        ("correct_harness", pa.bool_()),
        ("extracted_math_verify", pa.string()),
        ("correct_math_verify", pa.bool_()),
    ]
)
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
SUMMARY_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("budget", pa.int64()),
        ("tokens", pa.int64()),
        ("benchmark", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
    ]
)
METRICS = ("accuracy", "accuracy_harness", "nll")


class EvaluationError(SynthllmError):
    """Bad evaluation input; the message names the file or config key."""


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_problems(benchmarks: dict[str, str], max_records: int | None, seed: int) -> list[dict]:
    """The problems of every benchmark in the config, in BENCHMARKS order."""
    unknown = sorted(set(benchmarks) - set(BENCHMARKS))
    if unknown:
        raise EvaluationError(f"evaluation.benchmarks: unknown {unknown}; known {BENCHMARKS}")
    problems = []
    for name in BENCHMARKS:
        if name in benchmarks:
            problems += load_benchmark(name, benchmarks[name], max_records, seed)
    return problems


def train_tokens(train_counts: str | None) -> int:
    """D of the scaling law: the `tokens` of the checkpoint's training counts (0 without)."""
    if not train_counts:
        return 0
    try:
        return int(json.loads(Path(train_counts).read_text())["tokens"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise EvaluationError(f"{train_counts}: no integer `tokens` field ({exc})") from exc


def run(
    *, inputs: dict, outputs: dict, settings: dict, execution: dict, open_backend_fn=None
) -> dict:
    """Generate and grade one checkpoint (`inputs["checkpoint"]`; D from the optional
    `inputs["train_counts"]`) into `outputs` predictions, settings and counts. Settings:
    label and budget (the job's wildcards), config keys evaluation.benchmarks, max_records,
    seed, max_new_tokens, grade_timeout_s, the output-affecting part of evaluation.engine
    (`engine`) and chat.system_prompt; execution: evaluation.chunk_size and the engine's
    execution keys (rules/eval.smk). `open_backend_fn(spec)` (default
    synthllm.llm.open_backend) lets a benchmark share one engine between runs."""
    from synthllm.llm import BackendSpec, Request, Sampling, open_backend
    from synthllm.settings import merged

    checkpoint, train_counts = inputs["checkpoint"], inputs.get("train_counts")
    label, budget = settings["label"], settings["budget"]
    benchmarks, system_prompt = settings["benchmarks"], settings["system_prompt"]
    max_new_tokens, grade_timeout_s = settings["max_new_tokens"], settings["grade_timeout_s"]
    engine = dict(sorted(merged(settings, execution, "engine").items()))
    problems = load_problems(benchmarks, settings["max_records"], settings["seed"])
    spec = BackendSpec.from_config(
        "evaluation.engine",
        {**{k: v for k, v in engine.items() if k != "gpus"}, "model": checkpoint},
    )
    sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=max_new_tokens, seed=0)
    messages = [prompt_messages(p["question"], system_prompt) for p in problems]
    requests = [Request(m) for m in messages]
    predictions = Path(outputs["predictions"])
    predictions.parent.mkdir(parents=True, exist_ok=True)
    # what changes the completions: the checkpoint, the engine's output-affecting settings,
    # the sampling and the prompts (never the execution knobs)
    fp = fingerprint(
        stage="evaluate",
        model=checkpoint,
        engine=settings["engine"],
        sampling=sampling,
        requests=requests,
    )
    completions, facts = generate_resumable(
        requests,
        spec,
        sampling,
        predictions,
        fp,
        execution["chunk_size"],
        desc=f"evaluate {label}/{budget}",
        open_backend_fn=open_backend_fn or open_backend,
    )
    rows = []
    gold_cache: dict[str, list] = {}
    for p, m, c in tqdm(list(zip(problems, messages, completions)), desc="grade", mininterval=5.0):
        if p["gold"] not in gold_cache:
            gold_cache[p["gold"]] = parse_gold_math_verify(p["gold"], grade_timeout_s)
        grades = grade(
            c.text, p["gold"], p["benchmark"], grade_timeout_s, gold_parsed=gold_cache[p["gold"]]
        )
        rows.append(
            {
                "benchmark": p["benchmark"],
                "id": p["id"],
                "question": p["question"],
                "gold": p["gold"],
                "messages": json.dumps(m, ensure_ascii=False),
                "completion": c.text,
                "finish_reason": c.finish_reason,
                **grades,
            }
        )
    accuracy = accuracy_table(rows)
    record = {
        "model": label,
        "budget": budget,
        "tokens": train_tokens(train_counts),
        "checkpoint": checkpoint,
        "system_prompt": system_prompt,
        "sampling": {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": max_new_tokens, "n": 1},
        "engine": engine,
        "max_records": settings["max_records"],
        "seed": settings["seed"],
        "benchmarks": {
            name: {"path": path, "sha256": _sha256(path)} for name, path in benchmarks.items()
        },
        **facts,
    }
    write_json(outputs["settings"], record)
    write_parquet(rows, PREDICTIONS_SCHEMA, predictions)
    counts = write_counts(
        outputs["counts"], "evaluate", len(problems), len(rows), {}, accuracy=accuracy, **facts
    )
    progress_path(predictions).unlink(missing_ok=True)
    for name, row in accuracy.items():
        log.info(
            "%s: accuracy %.1f %% (harness %.1f %%) of %d",
            name,
            row["accuracy"],
            row["accuracy_harness"],
            row["n"],
        )
    return counts


def accuracy_table(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per benchmark: accuracy (math-verify) and accuracy_harness, in percent."""
    table = {}
    for name in BENCHMARKS:
        mine = [r for r in rows if r["benchmark"] == name]
        if mine:
            table[name] = {
                "accuracy": 100.0 * sum(r["correct_math_verify"] for r in mine) / len(mine),
                "accuracy_harness": 100.0 * sum(r["correct_harness"] for r in mine) / len(mine),
                "n": len(mine),
            }
    return table


# --- NLL ---------------------------------------------------------------------------------


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
    `outputs["nll"]` and `outputs["counts"]`. Settings: config keys evaluation.benchmarks,
    max_records, seed, evaluation.nll (`nll`: max_tokens, dtype) and chat.system_prompt;
    execution: evaluation.nll.batch_size (rules/eval.smk)."""
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
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            token_nll = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none"
            )
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


# --- summary -----------------------------------------------------------------------------


def summary_rows(eval_dir: str) -> list[dict]:
    """The long-format summary rows of one checkpoint's eval folder."""
    folder = Path(eval_dir)
    try:
        settings = json.loads((folder / "settings.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"{folder / 'settings.json'}: {exc} (run synthllm evaluate)") from exc
    key = {
        "model": settings["model"],
        "budget": int(settings["budget"]),
        "tokens": int(settings["tokens"]),
    }
    values: dict[str, dict[str, float]] = {m: {} for m in METRICS}
    accuracy = accuracy_table(pq.read_table(folder / "predictions.parquet").to_pylist())
    for name, row in accuracy.items():
        values["accuracy"][name] = row["accuracy"]
        values["accuracy_harness"][name] = row["accuracy_harness"]
    if (folder / "nll.parquet").exists():
        values["nll"] = nll_table(pq.read_table(folder / "nll.parquet").to_pylist())
    rows = []
    for metric, per_benchmark in values.items():
        for name, value in per_benchmark.items():
            rows.append({**key, "benchmark": name, "metric": metric, "value": float(value)})
        if per_benchmark:
            # the paper's "Average": the plain mean of the six benchmarks (all six required)
            average = (
                sum(per_benchmark.values()) / len(per_benchmark)
                if len(per_benchmark) == len(BENCHMARKS)
                else math.nan
            )
            rows.append({**key, "benchmark": "average", "metric": metric, "value": average})
    return rows


def run_summary(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> None:
    """Accuracy and NLL of every checkpoint's eval folder (the folders of
    `inputs["predictions"]`, in order) as `outputs` summary (long format), csv and markdown.
    No settings (rules/eval.smk)."""
    eval_dirs = list(dict.fromkeys(str(Path(p).parent) for p in inputs["predictions"]))
    rows = [r for d in eval_dirs for r in summary_rows(d)]
    rows.sort(key=lambda r: (r["model"], r["budget"], METRICS.index(r["metric"])))
    write_parquet(rows, SUMMARY_SCHEMA, outputs["summary"])
    out_csv, out_md = outputs["csv"], outputs["markdown"]
    columns = list(BENCHMARKS) + ["average"]
    wide: dict[tuple, dict] = {}
    for r in rows:
        wide.setdefault((r["model"], r["budget"], r["tokens"], r["metric"]), {})[r["benchmark"]] = (
            r["value"]
        )
    header = ["model", "budget", "tokens", "metric"] + columns
    lines = []
    for (model, budget, tokens, metric), values in wide.items():
        lines.append(
            [model, str(budget), str(tokens), metric]
            + [f"{values[c]:.4g}" if c in values else "" for c in columns]
        )
    with atomic_path(out_csv) as tmp:
        tmp.write_text("\n".join(",".join(x) for x in [header] + lines) + "\n")
    with atomic_path(out_md) as tmp:
        md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(x) + " |" for x in lines]
        note = (
            "\naccuracy: math-verify, percent; accuracy_harness: the Qwen2.5-Math "
            "harness's grader, percent; nll: nats per reference-solution token. "
            "average: mean of the six benchmarks.\n"
        )
        tmp.write_text("\n".join(md) + "\n" + note)
    print(Path(out_md).read_text())
    log.info("summary: %d rows", len(rows))
