"""Stage 11: evaluation of one checkpoint on the six benchmarks (paper §4). The NLL of the
reference solutions is synthllm.stages.eval_nll, the table of every checkpoint synthllm.stages.eval_summary.

`run` (synthllm evaluate): zero-shot chain of thought, the prompt being
`synthllm.core.chat.prompt_messages(question, chat.system_prompt)` through the model's chat
template, greedy, `max_new_tokens`, on the generation layer (vLLM by default); a killed job
resumes from `predictions.parquet.progress.jsonl`. Writes into the checkpoint's eval folder:

- `predictions.parquet`, one row per problem: benchmark, id, question, gold, messages (the
  prompt, JSON), completion, finish_reason, extracted (the harness's normalised answer),
  correct_harness, extracted_math_verify, correct_math_verify (see synthllm.core.grading);
- `settings.json`: model label, budget, tokens (from the training counts), kind (trained,
  base, or outside: a model of config models.outside, evaluated as it is, with its entry
  under `outside`), checkpoint folder, system prompt, sampling, engine, benchmark files with
  their sha256, sample size and seed, engine start-up and generation seconds;
- `counts.json`: problems in and out, accuracy per benchmark under both graders.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm

from synthllm.core.chat import prompt_messages
from synthllm.core.eval_data import BENCHMARKS, load_benchmark
from synthllm.core.files import write_counts, write_json, write_parquet
from synthllm.core.generation import fingerprint, generate_resumable, progress_path
from synthllm.core.grading import grade, parse_gold_math_verify
from synthllm.errors import SynthllmError

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
        raise EvaluationError(f"evaluate.benchmarks: unknown {unknown}; known {BENCHMARKS}")
    problems = []
    for name in BENCHMARKS:
        if name in benchmarks:
            problems += load_benchmark(name, benchmarks[name], max_records, seed)
    return problems


KINDS = ("trained", "base", "outside")


def checkpoint_kind(settings: dict) -> str:
    """What an evaluated model is, from its job's settings (or its settings.json): outside
    (an entry of config models.outside), base (budget 0 of models.train) or trained."""
    if settings.get("outside"):
        return "outside"
    return "base" if int(settings["budget"]) == 0 else "trained"


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
    label and budget (the job's wildcards), `outside` (an outside model's entry of config
    models.outside; absent for a checkpoint of ours), config keys evaluate.benchmarks, max_records,
    seed, max_new_tokens, grade_timeout_s, the output-affecting part of evaluate.engine
    (`engine`) and chat.system_prompt; execution: evaluate.chunk_size and the engine's
    execution keys (rules/11_evaluate.smk). `open_backend_fn(spec)` (default
    synthllm.core.llm.open_backend) lets a benchmark share one engine between runs."""
    from synthllm.core.llm import BackendSpec, Request, Sampling, open_backend
    from synthllm.settings import merged

    checkpoint, train_counts = inputs["checkpoint"], inputs.get("train_counts")
    label, budget = settings["label"], settings["budget"]
    benchmarks, system_prompt = settings["benchmarks"], settings["system_prompt"]
    max_new_tokens, grade_timeout_s = settings["max_new_tokens"], settings["grade_timeout_s"]
    engine = dict(sorted(merged(settings, execution, "engine").items()))
    problems = load_problems(benchmarks, settings["max_records"], settings["seed"])
    spec = BackendSpec.from_config(
        "evaluate.engine",
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
        "kind": checkpoint_kind(settings),
        **({"outside": settings["outside"]} if settings.get("outside") else {}),
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
