"""Evaluation stage on the real small model and real benchmark files: NLL, summary, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from synthllm.core.eval_data import BENCHMARKS
from synthllm.core.files import write_json, write_parquet
from synthllm.core.grading import grade
from synthllm.core.llm import Backend, Completion
from synthllm.stages.eval_nll import encode_for_nll, run_nll
from synthllm.stages.eval_summary import run_summary
from synthllm.stages.evaluate import EvaluationError, load_problems, run

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "benchmarks"
MODEL = ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"
SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is absent")
needs_model = pytest.mark.skipif(
    not (MODEL / "config.json").exists(), reason="resources/models not filled: run ./install.sh"
)
BENCH = {name: str(DATA / name / "test.jsonl") for name in BENCHMARKS}


@needs_data
@needs_model
def test_nll_is_the_same_batched_or_alone_and_masks_the_prompt(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    two = {"math": BENCH["math"], "college_math": BENCH["college_math"]}
    for batch_size in (1, 4):
        run_nll(
            inputs={"checkpoint": str(MODEL), "benchmarks": list(two.values())},
            outputs={
                "nll": str(tmp_path / f"nll{batch_size}.parquet"),
                "counts": str(tmp_path / f"counts{batch_size}.json"),
            },
            settings={
                "benchmarks": two,
                "max_records": 2,
                "seed": 0,
                "system_prompt": SYSTEM,
                "nll": {"max_tokens": 192, "dtype": "float32"},
            },
            execution={"threads": 1, "nll": {"batch_size": batch_size}},
        )
    alone = pl.read_parquet(tmp_path / "nll1.parquet")
    batched = pl.read_parquet(tmp_path / "nll4.parquet")
    assert alone["id"].to_list() == batched["id"].to_list()
    assert batched["target_kind"].to_list() == ["solution", "solution", "answer", "answer"]
    for a, b in zip(alone["nll_sum"], batched["nll_sum"]):
        assert math.isclose(a, b, rel_tol=1e-4)

    # by hand for the first record: only the target's tokens are scored
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    problem = load_problems(two, 2, 0)[0]
    ids, prompt_len, _, truncated = encode_for_nll(tokenizer, problem, SYSTEM, 192)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    expected = -sum(float(logp[t - 1, ids[t]]) for t in range(prompt_len, len(ids)))
    assert math.isclose(alone["nll_sum"][0], expected, rel_tol=1e-4)
    assert alone["tokens"][0] == len(ids) - prompt_len and alone["truncated"][0] == truncated
    assert json.loads((tmp_path / "counts1.json").read_text())["out"] == 4


def _eval_dir(
    folder: Path,
    model: str,
    budget: int,
    tokens: int,
    answers: dict[str, str],
    nll_per_token: float | None,
    outside: dict | None = None,
) -> str:
    """An eval folder graded from hand-written completions (one problem per benchmark); no
    NLL with `nll_per_token` None; `outside`: an outside model's entry (its settings.json)."""
    from synthllm.stages.eval_nll import NLL_SCHEMA
    from synthllm.stages.evaluate import PREDICTIONS_SCHEMA

    rows, nll_rows = [], []
    for name in BENCHMARKS:
        gold = "4"
        completion = f"So the answer is $\\boxed{{{answers.get(name, '5')}}}$."
        rows.append(
            {
                "benchmark": name,
                "id": "0",
                "question": "2+2?",
                "gold": gold,
                "messages": "[]",
                "completion": completion,
                "finish_reason": "stop",
                **grade(completion, gold, name),
            }
        )
        nll_rows.append(
            {
                "benchmark": name,
                "id": "0",
                "target_kind": "answer",
                "tokens": 10,
                "truncated": False,
                "nll_sum": 10 * (nll_per_token or 0.0),
            }
        )
    write_parquet(rows, PREDICTIONS_SCHEMA, folder / "predictions.parquet")
    if nll_per_token is not None:
        write_parquet(nll_rows, NLL_SCHEMA, folder / "nll.parquet")
    settings = {"model": model, "budget": budget, "tokens": tokens}
    write_json(folder / "settings.json", {**settings, **({"outside": outside} if outside else {})})
    return str(folder)


def summary_outputs(tmp_path: Path) -> dict:
    return {
        "summary": str(tmp_path / "summary.parquet"),
        "csv": str(tmp_path / "s.csv"),
        "markdown": str(tmp_path / "s.md"),
        "table2": str(tmp_path / "t2.csv"),
        "table2_md": str(tmp_path / "t2.md"),
    }


def summary_inputs(*folders: str) -> dict:
    return {
        name: [f"{d}/{name}.{ext}" for d in folders]
        for name, ext in (("predictions", "parquet"), ("settings", "json"), ("nll", "parquet"))
    }


def table2_layout(budgets, outside=()) -> dict:
    return {"metric": "accuracy_harness", "budgets": budgets, "groups": ["m"], "outside": outside}


def test_summary_long_format_and_average(tmp_path):
    base = _eval_dir(tmp_path / "m" / "0", "m", 0, 0, {}, 2.0)
    # right on gsm8k and math (as 4.0 and \frac{8}{2}), wrong elsewhere
    trained = _eval_dir(
        tmp_path / "m" / "100", "m", 100, 5000, {"gsm8k": "4.0", "math": "\\frac{8}{2}"}, 1.5
    )
    run_summary(
        inputs=summary_inputs(trained, base),
        outputs=summary_outputs(tmp_path),
        settings={"table2": table2_layout([100])},
        execution={"threads": 1},
    )
    summary = pl.read_parquet(tmp_path / "summary.parquet")
    assert summary.schema == {
        "model": pl.String,
        "kind": pl.String,
        "budget": pl.Int64,
        "tokens": pl.Int64,
        "benchmark": pl.String,
        "metric": pl.String,
        "value": pl.Float64,
    }
    assert summary["budget"].to_list()[0] == 0  # sorted by budget
    assert len(summary) == 2 * 3 * 7

    def value(budget, benchmark, metric):
        return summary.filter(
            (pl.col("budget") == budget)
            & (pl.col("benchmark") == benchmark)
            & (pl.col("metric") == metric)
        )["value"].item()

    assert value(100, "gsm8k", "accuracy") == 100.0 == value(100, "math", "accuracy_harness")
    assert value(100, "olympiadbench", "accuracy") == 0.0
    assert math.isclose(value(100, "average", "accuracy"), 200 / 6)
    assert value(0, "average", "accuracy_harness") == 0.0
    assert math.isclose(value(100, "average", "nll"), 1.5)
    assert summary.filter(pl.col("budget") == 100)["tokens"].unique().to_list() == [5000]
    assert "| m | trained | 100 | 5000 | accuracy |" in (tmp_path / "s.md").read_text()
    assert "| m | base | 0 | 0 | nll |" in (tmp_path / "s.md").read_text()
    assert (tmp_path / "s.csv").read_text().splitlines()[0].endswith("gaokao2023en,average")


def test_table2_puts_outside_models_beside_their_group_and_fails_on_a_missing_row(tmp_path):
    """Table 2: per group its outside models, its base model and the budgets asked for;
    the outside models of no group last; outside models have accuracies and no NLL."""
    m0 = _eval_dir(tmp_path / "m" / "0", "m", 0, 0, {}, 2.0)
    m100 = _eval_dir(tmp_path / "m" / "100", "m", 100, 5000, {"gsm8k": "4"}, 1.8)
    m3200 = _eval_dir(tmp_path / "m" / "3200000", "m", 3200000, 9000, {"math": "4"}, 1.5)
    entry = {"label": "inst", "model": "org/inst", "chat_template": None}
    inst = _eval_dir(tmp_path / "inst" / "0", "inst", 0, 0, {"gsm8k": "4"}, None, entry)
    other = _eval_dir(
        tmp_path / "other" / "0", "other", 0, 0, {}, None, {**entry, "label": "other"}
    )
    layout = table2_layout([3200000], [["other", None], ["inst", "m"]])
    run_summary(
        inputs=summary_inputs(m3200, inst, m0, other, m100),
        outputs=summary_outputs(tmp_path),
        settings={"table2": layout},
        execution={"threads": 1},
    )
    summary = pl.read_parquet(tmp_path / "summary.parquet")
    kinds = {(m, b): k for m, b, k in summary.select("model", "budget", "kind").unique().rows()}
    assert kinds == {
        ("m", 0): "base",
        ("m", 100): "trained",
        ("m", 3200000): "trained",
        ("inst", 0): "outside",
        ("other", 0): "outside",
    }
    assert summary.filter(pl.col("kind") == "outside")["metric"].unique().sort().to_list() == [
        "accuracy",
        "accuracy_harness",
    ]
    table = pl.read_csv(tmp_path / "t2.csv")
    order = table.select("model", "budget").unique(maintain_order=True).rows()
    assert order == [("inst", 0), ("m", 0), ("m", 3200000), ("other", 0)]  # not budget 100
    assert table.filter(pl.col("model") == "inst")["group"].to_list() == ["m", "m"]
    harness = table.filter(pl.col("metric") == "accuracy_harness")
    assert harness["gsm8k"].to_list() == [100.0, 0.0, 0.0, 0.0]
    assert harness["math"].to_list() == [0.0, 0.0, 100.0, 0.0]
    md = (tmp_path / "t2.md").read_text()
    assert md.index("harness grader") < md.index("math-verify grader") < md.index("NLL")
    assert "| inst | outside | 100 | 0 |" in md and "| m (3.2M) | trained | 0 | 100 |" in md
    assert "| m base | base |" in md

    with pytest.raises(EvaluationError, match="no accuracy of m at budget 400 .*evaluate.table2"):
        run_summary(
            inputs=summary_inputs(m0, m100),
            outputs=summary_outputs(tmp_path),
            settings={"table2": table2_layout([400])},
            execution={"threads": 1},
        )


ENGINE = {"backend": "vllm", "dtype": "float32", "max_model_len": 1024}
ENGINE_EXECUTION = {
    "enforce_eager": True,
    "kv_cache_gib": 1,
    "tensor_parallel_size": 1,
    "gpus": 0,
    "batch_size": 32,
}


def evaluate_parts(tmp_path: Path, train_counts: Path, **execution) -> dict:
    """The four parts of an evaluate job of checkpoint smol/0, one problem per benchmark."""
    out = tmp_path / "eval" / "smol" / "0"
    return {
        "inputs": {
            "checkpoint": str(MODEL),
            "train_counts": str(train_counts),
            "benchmarks": list(BENCH.values()),
        },
        "outputs": {
            name: str(out / file)
            for name, file in (
                ("predictions", "predictions.parquet"),
                ("settings", "settings.json"),
                ("counts", "counts.json"),
            )
        },
        "settings": {
            "label": "smol",
            "budget": 0,
            "benchmarks": BENCH,
            "max_records": 1,
            "seed": 0,
            "system_prompt": SYSTEM,
            "engine": ENGINE,
            "max_new_tokens": 16,
            "grade_timeout_s": 3,
        },
        "execution": {"threads": 1, "chunk_size": 256, "engine": ENGINE_EXECUTION, **execution},
    }


class FakeEngine(Backend):
    """A backend that answers every request with a boxed 4, and can fail after some
    completions (a killed job); `calls` gets the positions of each stream."""

    def __init__(self, calls: list, fail_after: int | None = None):
        self.calls, self.fail_after = calls, fail_after

    def stream(self, requests, sampling, positions, max_in_flight, halt=lambda: False):
        self.calls.append(list(positions))
        for n, pos in enumerate(positions):
            if n == self.fail_after:
                raise RuntimeError("killed")
            yield pos, Completion("The answer is $\\boxed{4}$.", "stop")


@needs_data
def test_evaluate_resumes_whatever_the_execution_knobs(tmp_path):
    """The progress of a killed evaluation is kept when only execution keys change (chunk
    size, eager mode, KV cache, tensor parallelism): its fingerprint has none of them."""
    train_counts = tmp_path / "train_counts.json"
    train_counts.write_text(json.dumps({"tokens": 1234}))
    calls = []
    first = evaluate_parts(tmp_path, train_counts, chunk_size=2)
    with pytest.raises(RuntimeError, match="killed"):
        run(**first, open_backend_fn=lambda spec: FakeEngine(calls, fail_after=2))
    assert calls == [[0, 1, 2, 3, 4, 5]]  # 0 and 1 finished, then the kill
    knobs = {"enforce_eager": False, "kv_cache_gib": 4, "tensor_parallel_size": 2, "gpus": 2}
    again = evaluate_parts(
        tmp_path, train_counts, chunk_size=4, engine={**ENGINE_EXECUTION, **knobs}
    )
    specs = []
    counts = run(**again, open_backend_fn=lambda spec: specs.append(spec) or FakeEngine(calls))
    assert calls == [[0, 1, 2, 3, 4, 5], [2, 3, 4, 5]]
    assert counts["resumed"] == 2 and counts["generated"] == 4
    assert specs[0].tensor_parallel_size == 2 and specs[0].model == str(MODEL)
    settings = json.loads(Path(again["outputs"]["settings"]).read_text())
    assert settings["engine"] == dict(sorted({**ENGINE, **ENGINE_EXECUTION, **knobs}.items()))
    assert settings["tokens"] == 1234 and settings["budget"] == 0 and settings["model"] == "smol"

    # a setting that changes the completions starts afresh
    calls.clear()
    with pytest.raises(RuntimeError, match="killed"):
        run(**first, open_backend_fn=lambda spec: FakeEngine(calls, fail_after=2))
    changed = evaluate_parts(tmp_path, train_counts)
    changed["settings"]["max_new_tokens"] = 8
    counts = run(**changed, open_backend_fn=lambda spec: FakeEngine(calls))
    assert counts["resumed"] == 0 and counts["generated"] == 6


@needs_data
@needs_model
def test_evaluate_cli_on_the_small_model(tmp_path):
    """One problem per benchmark, a few tokens: a real vLLM run through the CLI."""
    train_counts = tmp_path / "train_counts.json"
    train_counts.write_text(json.dumps({"tokens": 1234}))
    out = tmp_path / "eval" / "smol" / "0"
    parts = evaluate_parts(tmp_path, train_counts)
    subprocess.run(
        [sys.executable, "-m", "synthllm", "evaluate"]
        + [arg for name, part in parts.items() for arg in (f"--{name}", json.dumps(part))],
        check=True,
        cwd=ROOT,
    )
    predictions = pl.read_parquet(out / "predictions.parquet")
    assert predictions["benchmark"].to_list() == list(BENCHMARKS)
    assert predictions["completion"].str.len_chars().min() > 0
    first = json.loads(predictions["messages"][0])
    assert first[0] == {"role": "system", "content": SYSTEM} and first[1]["role"] == "user"
    settings = json.loads((out / "settings.json").read_text())
    assert settings["tokens"] == 1234 and settings["sampling"]["max_new_tokens"] == 16
    assert set(settings["benchmarks"]) == set(BENCHMARKS)
    assert not (out / "predictions.parquet.progress.jsonl").exists()


# a chat template whose assistant turns end with <|endoftext|>, not SmolLM2's eos <|im_end|>
TURN_END_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] }}{% if message['role'] == 'assistant' %}{{ '<|endoftext|>' }}"
    "{% else %}{{ '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def stage_outside(tmp_path: Path, spec: dict, hub: dict | None = None) -> tuple[Path, dict]:
    """`synthllm outside_model` of one models.outside entry, as rules/11_evaluate.smk runs it."""
    from synthllm.stages.outside_model import run as run_outside

    folder = tmp_path / "outside" / spec["label"] / "final"
    counts = run_outside(
        inputs={},
        outputs={"final": str(folder), "counts": str(folder.parent / "counts.json")},
        settings={"model": spec},
        execution={"threads": 1, "hub": hub or {}},
    )
    return folder, counts


@needs_data
@needs_model
def test_an_outside_model_is_evaluated_as_it_is_with_its_template_and_turn_end(tmp_path):
    """An outside model's folder links the weights, holds the entry's chat template and ends
    generation on that template's turn end (<|endoftext|>, not the tokenizer's eos); the
    evaluation stage scores it like a checkpoint: kind outside, D = 0, no NLL."""
    from synthllm.core.llm import checkpoint_stop_ids
    from synthllm.stages.eval_summary import summary_rows
    from transformers import AutoTokenizer

    template = tmp_path / "turn_end.jinja"
    template.write_text(TURN_END_TEMPLATE)
    spec = {"label": "smol-inst", "model": str(MODEL), "chat_template": str(template)}
    folder, counts = stage_outside(tmp_path, spec)
    weights = folder / "model.safetensors"
    assert weights.is_symlink() and weights.resolve() == (MODEL / "model.safetensors").resolve()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template == TURN_END_TEMPLATE
    turn_end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert turn_end != tokenizer.eos_token_id
    stops = sorted({turn_end, tokenizer.eos_token_id})
    assert checkpoint_stop_ids(str(folder)) == stops == counts["end_token_ids"]
    # the model's own folder is untouched: its generation config still names its eos only
    assert checkpoint_stop_ids(str(MODEL)) == [tokenizer.eos_token_id]

    parts = evaluate_parts(tmp_path, tmp_path / "unused.json")
    del parts["inputs"]["train_counts"]  # an outside model has no training of ours
    parts["inputs"]["checkpoint"] = str(folder)
    parts["settings"].update(label="smol-inst", outside=spec)
    parts["settings"]["engine"] = {**ENGINE, "backend": "transformers"}
    run(**parts)
    out = Path(parts["outputs"]["settings"]).parent
    settings = json.loads((out / "settings.json").read_text())
    assert settings["kind"] == "outside" and settings["outside"] == spec
    assert settings["tokens"] == 0 and settings["checkpoint"] == str(folder)
    rows = summary_rows(str(out))
    assert {r["kind"] for r in rows} == {"outside"}
    assert {r["metric"] for r in rows} == {"accuracy", "accuracy_harness"}
    assert len(rows) == 2 * (len(BENCHMARKS) + 1)


@needs_model
def test_an_outside_hub_model_is_staged_from_the_cache_and_one_without_template_is_named(
    tmp_path, monkeypatch
):
    """A hub model is read from its snapshot in the staged cache (offline, at its revision);
    a model that ships no chat template, with none in its entry, fails naming the key."""
    from synthllm.stages.outside_model import OutsideModelError

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--org--smol"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    # no chat_template.jinja: this model ships no template
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (snapshot / name).symlink_to(MODEL / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = {"home": str(tmp_path / "hf")}
    spec = {"label": "smol", "model": "org/smol", "revision": commit, "chat_template": None}
    with pytest.raises(OutsideModelError, match=r"models.outside\[label=smol\].chat_template"):
        stage_outside(tmp_path, spec, hub)
    template = tmp_path / "t.jinja"
    template.write_text(TURN_END_TEMPLATE)
    folder, counts = stage_outside(tmp_path, {**spec, "chat_template": str(template)}, hub)
    assert counts["source"] == str(snapshot)
    assert (folder / "model.safetensors").resolve() == (MODEL / "model.safetensors").resolve()
    assert (folder / "config.json").readlink() == snapshot / "config.json"


SMOL_OUTSIDE = {"label": "smol", "model": "resources/models/SmolLM2-135M-Instruct"}


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"models": {"outside": [{**SMOL_OUTSIDE, "group": "9B"}]}},
            "config key models.outside[0].group: '9B' is not a label of models.train (3M)",
        ),
        (
            {"models": {"outside": [{**SMOL_OUTSIDE, "label": "3M"}]}},
            "config key models.outside: labels ['3M'] are labels of models.train too",
        ),
        (
            {"models": {"outside": [SMOL_OUTSIDE, SMOL_OUTSIDE]}},
            "config key models.outside: labels ['smol'] appear more than once",
        ),
        (
            {"models": {"outside": [{**SMOL_OUTSIDE, "chat_template": "no/such.jinja"}]}},
            "config key models.outside[0].chat_template: no/such.jinja is not a file",
        ),
        (
            {"evaluate": {"table2": {"budgets": [16, 20]}}},
            "config key evaluate.table2.budgets: [20] are not training budgets",
        ),
    ],
)
def test_a_bad_outside_model_or_table2_key_fails_the_plan_naming_it(tmp_path, change, message):
    import yaml

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"results": str(tmp_path / "r"), **change}))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", "config/test.yaml", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
