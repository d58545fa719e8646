"""Augmentation baselines (paper §6 Fig. 6, §7): rephrase and persona expansion of Level-1
seed questions, against Level-2 and Level-3 on the same documents.

On the experiment documents (synthllm.experiments.docs), the pipeline's Level-1 stage extracts the
seed questions (paper: about 6,500 from 2,000 documents). Each baseline expands them to
`target` questions (paper 300K), one question per generation call:

- rephrase (MetaMath style): a 2-shot prompt (prompts/rephrase.j2) asks for the same question
  in new words; question j rephrases seed j mod n (round j // n), so every seed is rephrased
  equally often;
- persona (Persona Hub style): prompts/persona.j2 asks for a new problem of the seed's kind
  for one persona; question j takes seed j mod n and a persona drawn uniformly (seeded) from
  a Persona Hub-format jsonl (one object per line with "persona", or "input persona" as in
  Persona Hub's synthesised subsets).

Level-2 and Level-3 questions on the same documents come from the pipeline's own stages with
more questions per document (rules/experiments/augmentation.smk). Every method's questions then go
through the same answer, decontamination, SFT-pool and nested-mixture stages as the main
pipeline, with the dedup stage only if augmentation.deduplicate (else `usable_answers`
keeps the answers of a usable status, duplicates included: the paper's counts are
generated questions, and a rephrase pool deduplicated would not reach them); each model trains on each method at each sample count (documents x questions
per document, paper 25, 50, ..., 150), and the figure plots the evaluation against the count.

Output schema of a baseline (`augmentation/questions/{rephrase,persona}/shard-*.parquet`):
synthllm.core.questions.SCHEMA (level 1: derived from Level-1 seeds; origin = the method;
doc_ids = the seed's document) plus
    seed_question_id  string   the Level-1 seed it expands
    persona           string   the persona (null for rephrase)
question_id: "{method}-{seed question_id}-r{round}".

Figure outputs (`augmentation/`): fig6.png/.pdf, panel (a) the MATH metric and (b) the
six-benchmark average against the number of training samples, one line per method;
fig6.csv/.md the plotted values (every metric).
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from synthllm.core import questions
from synthllm.core.files import atomic_path, save_figure, write_counts, write_parquet_table
from synthllm.core.generation import GenerationStage, completion_status, render
from synthllm.core.llm import Completion, Request
from synthllm.core.parsers import Parsed, _clean, _json_object
from synthllm.experiments.docs import ExperimentError, eval_runs, labelled_rows

log = logging.getLogger(__name__)

METHODS = ("rephrase", "persona")
SCHEMA = pa.schema(
    list(questions.SCHEMA)
    + [pa.field("seed_question_id", pa.string()), pa.field("persona", pa.string())]
)
_PREFIX = re.compile(r"^\s*(?:rewritten question|new problem|question|problem)\s*:\s*", re.I)


def question_schema() -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["question"],
        "properties": {"question": {"type": "string", "minLength": 10, "maxLength": 600}},
    }


def parse_question(text: str) -> Parsed:
    """One question: a JSON object's "question", or the free text without a leading label."""
    obj = _json_object(text)
    if obj is not None:
        q = obj.get("question")
        q = _clean(q) if isinstance(q, str) else ""
    elif text.lstrip().startswith("{"):
        return Parsed("malformed")  # JSON asked for, cut or broken
    else:
        q = _clean(_PREFIX.sub("", text.strip()))
    return Parsed("ok", [{"question": q}]) if q else Parsed("empty")


def load_personas(path: str) -> list[str]:
    """The personas of a Persona Hub-format jsonl, in file order."""
    personas = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ExperimentError(f"config key augmentation.persona.file: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ExperimentError(f"{path} line {number}: not JSON ({exc})") from exc
        persona = obj.get("persona", obj.get("input persona")) if isinstance(obj, dict) else None
        if not isinstance(persona, str) or not persona.strip():
            raise ExperimentError(f'{path} line {number}: no "persona" (or "input persona") text')
        personas.append(persona.strip())
    if not personas:
        raise ExperimentError(f"{path}: no personas")
    return personas


def expansion_plan(n_seeds: int, target: int) -> list[tuple[int, int]]:
    """(seed index, round) of each of the `target` questions: seeds in turn, round by round."""
    if n_seeds < 1:
        raise ExperimentError("no usable Level-1 seed questions to expand")
    return [(j % n_seeds, j // n_seeds) for j in range(target)]


def persona_draws(n_personas: int, target: int, seed: int) -> np.ndarray:
    """The persona index of each of the `target` questions, uniform with replacement."""
    return np.random.default_rng(seed).integers(0, n_personas, size=target)


def expansion_items(
    method: str,
    seeds: list[dict],
    target: int,
    personas: list[str] | None = None,
    persona_seed: int = 0,
) -> list[dict]:
    """The seed, round and persona (None for rephrase) of each expanded question."""
    plan = expansion_plan(len(seeds), target)
    draws = persona_draws(len(personas), target, persona_seed) if method == "persona" else None
    return [
        {"seed": seeds[s], "round": rnd, "persona": None if draws is None else personas[draws[j]]}
        for j, (s, rnd) in enumerate(plan)
    ]


def expansion_request(method: str, item: dict, structured: bool) -> Request:
    """The generation request of one expanded question."""
    values = {"question": item["seed"]["question"], "structured": structured}
    if item["persona"] is not None:
        values["persona"] = item["persona"]
    constraint = {"json": question_schema()} if structured else None
    return Request([{"role": "user", "content": render(method, **values)}], constraint)


class Expand(GenerationStage):
    """Rephrase or persona expansion of the seeds: inputs seeds (Level-1 questions), personas
    (the persona file, a list: empty for rephrase), outputs questions, counts. Settings: the
    job's method, augmentation.<method>.sampling as sampling, models.generator as model,
    generation.structured as structured, the target question count (documents x the largest
    augmentation.questions_per_doc x overgenerate), augmentation.persona.seed as
    persona_seed (persona only) (rules/experiments/augmentation.smk)."""

    schema = SCHEMA
    output = "questions"

    def __init__(self, *, inputs: dict, outputs: dict, settings: dict, execution: dict):
        method = settings["method"]
        if method not in METHODS:
            raise ExperimentError(f"unknown augmentation method {method!r} (one of {METHODS})")
        self.stage = self.template = method  # counts, progress and prompt are the method's
        super().__init__(inputs=inputs, outputs=outputs, settings=settings, execution=execution)

    def units(self) -> list[dict]:
        s = self.settings
        columns = ["question_id", "doc_ids", "question"]
        self.seeds = pq.read_table(self.inputs["seeds"], columns=columns).to_pylist()
        self.personas = None
        if s["method"] == "persona":
            if not self.inputs["personas"]:
                raise ExperimentError(
                    "config key augmentation.persona.file: the file does not exist (the "
                    "persona method draws its personas from it)"
                )
            self.personas = load_personas(self.inputs["personas"][0])
        persona_seed = s["persona_seed"] if s["method"] == "persona" else 0
        return expansion_items(s["method"], self.seeds, s["target"], self.personas, persona_seed)

    def request(self, item: dict) -> Request:
        return expansion_request(self.settings["method"], item, self.settings["structured"])

    def records(self, item: dict, completion: Completion) -> tuple[str, list[dict]]:
        parsed = parse_question(completion.text)
        status = completion_status(parsed.status, completion)
        if status != "ok":
            return status, []
        seed, method = item["seed"], self.settings["method"]
        row = {
            "question_id": f"{method}-{seed['question_id']}-r{item['round']}",
            "level": 1,
            "doc_ids": seed["doc_ids"],
            "question": parsed.records[0]["question"],
            "origin": method,
            "school_level": None,
            "concepts": [],
            "call": item["round"],
            **self.provenance,
            "seed_question_id": seed["question_id"],
            "persona": item["persona"],
        }
        return status, [row]

    def counts(self, units, rows, statuses):
        return statuses, {
            "seeds": len(self.seeds),
            "personas": len(self.personas) if self.personas else None,
            "rounds": math.ceil(self.settings["target"] / len(self.seeds)),
        }


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    return Expand(inputs=inputs, outputs=outputs, settings=settings, execution=execution).run()


# --- answered questions without dedup -----------------------------------------------------


def usable_answers(
    answers: pl.DataFrame, statuses: tuple[str, ...]
) -> tuple[pl.DataFrame, dict[str, int]]:
    """The answered questions whose answer status is usable (config dedup.answer_statuses),
    and the others counted by reason `answer_<status>` as the dedup stage names them."""
    usable = answers["status"].is_in(list(statuses)).fill_null(False)
    dropped = answers.filter(~usable)["status"].fill_null("missing").value_counts()
    return answers.filter(usable), {f"answer_{s}": int(n) for s, n in dropped.iter_rows()}


def run_usable(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """A method's pool before decontamination when augmentation.deduplicate is false: Fig. 6
    counts generated samples (the paper's 50K-300K are 25-150 x 2,000), so duplicates stay.
    Inputs answers, outputs questions, counts. Settings: dedup.answer_statuses as
    answer_statuses (rules/experiments/augmentation.smk)."""
    statuses = tuple(settings["answer_statuses"])
    answers = pl.read_parquet(inputs["answers"])
    kept, dropped = usable_answers(answers, statuses)
    write_parquet_table(kept.to_arrow(), outputs["questions"])
    return write_counts(
        outputs["counts"],
        "usable_answers",
        len(answers),
        len(kept),
        dropped,
        answer_statuses=list(statuses),
    )


# --- figure ------------------------------------------------------------------------------

PANELS = (("math", "(a) MATH"), ("average", "(b) average of the six benchmarks"))
YLABEL = {
    "accuracy": "accuracy (%)",
    "accuracy_harness": "accuracy, harness grader (%)",
    "nll": "NLL of reference solutions (nats/token)",
}


def curves(
    rows: list[dict], model: str, metric: str, benchmark: str
) -> dict[str, list[tuple[int, float]]]:
    """Per method: (samples, value) points of one model, metric and benchmark, by samples."""
    out: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["model"] == model and r["metric"] == metric and r["benchmark"] == benchmark:
            out.setdefault(r["set"], []).append((r["budget"], r["value"]))
    return {k: sorted(v) for k, v in out.items()}


def figure(
    rows: list[dict], models: list[str], methods: list[str], metric: str, png: str, pdf: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(models), 2, figsize=(10, 3.8 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        for ax, (benchmark, title) in zip(axes[i], PANELS):
            lines = curves(rows, model, metric, benchmark)
            for method in methods:
                if method in lines:
                    x, y = zip(*lines[method])
                    ax.plot(x, y, marker="o", label=method.replace("level", "Level-"))
            ax.set_title(f"{title}, {model}")
            ax.set_xlabel("training samples")
            ax.set_ylabel(YLABEL[metric])
            ax.legend()
    fig.tight_layout()
    save_figure(fig, png, pdf)
    plt.close(fig)


def run_figure(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> list[dict]:
    """Fig. 6 and its values: inputs predictions, eval_settings, nll (one file of each eval
    folder per run, synthllm.experiments.docs.eval_runs), outputs fig6, fig6_pdf, values,
    markdown. Settings: the runs' labels (their methods), the models (augmentation.models
    resolved), augmentation.methods as methods, augmentation.metric as metric
    (rules/experiments/augmentation.smk)."""
    models, methods, metric = settings["models"], settings["methods"], settings["metric"]
    rows = labelled_rows(eval_runs(settings["runs"], inputs))
    figure(rows, models, methods, metric, outputs["fig6"], outputs["fig6_pdf"])
    keep = [r for r in rows if r["benchmark"] in ("math", "average")]
    keep.sort(
        key=lambda r: (
            models.index(r["model"]),
            methods.index(r["set"]),
            r["budget"],
            r["metric"],
            r["benchmark"],
        )
    )
    header = ["model", "method", "samples", "tokens", "metric", "benchmark", "value"]
    lines = [
        [
            r["model"],
            r["set"],
            str(r["budget"]),
            str(r["tokens"]),
            r["metric"],
            r["benchmark"],
            f"{r['value']:.4g}",
        ]
        for r in keep
    ]
    with atomic_path(outputs["values"]) as tmp:
        tmp.write_text("\n".join(",".join(x) for x in [header] + lines) + "\n")
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(x) + " |" for x in lines if x[4] == metric]
    text = "\n".join(md) + f"\n\nmetric: {YLABEL[metric]}\n"
    with atomic_path(outputs["markdown"]) as tmp:
        tmp.write_text(text)
    log.info("\n%s", text)
    return keep
