"""SFT training: the pure parts (packed rows, batching, schedule, settings) on real gsm8k
samples and the SmolLM2 tokenizer, then real 2-process DeepSpeed runs over gloo on a token
store (synthllm train_tokens; its own tests are tests/test_train_tokens.py), one of them
SIGKILLed and resumed, one stopped by SIGTERM (as SLURM's --signal) and resumed."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from synthllm.settings import schema_defaults, stage_settings
from synthllm.stages import train_tokens
from synthllm.stages.base_model import TrainModel, materialise_base, run_base_model
from synthllm.stages.train_data import (
    IGNORE,
    Rows,
    collate,
    label_loss_sum,
    rank_micro_batches,
    read_row,
    step_items,
    steps_per_epoch,
)
from synthllm.stages.train_settings import (
    TrainError,
    TrainSettings,
    gradient_accumulation,
    linear_schedule,
)
from trainfiles import NEEDS_DATA, ROOT, SYSTEM, TOKENIZER, gsm8k, write_mixture

pytestmark = NEEDS_DATA

# one layer, one head of 64: about 3 M parameters, nearly all in the embedding
TINY = {
    "label": "tiny",
    "model": str(TOKENIZER),
    "init": "scratch",
    "seed": 0,
    "chat_template": None,
    "architecture": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 1,
        "num_key_value_heads": 1,
    },
}


# config key train split as rules/10_train.smk splits it: what changes the model, and the
# execution keys (checkpoint cadence, peak_tflops, processes, threads)
TRAINING, TRAINING_EXECUTION = stage_settings(
    schema_defaults(models={"train": [copy.deepcopy(TINY)]}), "train"
)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "final"
    counts = run_base_model(
        inputs={},
        outputs={"final": str(out), "counts": str(out.parent / "counts.json")},
        settings={"model": TINY},
        execution={"threads": 1},
    )
    assert counts["tokens"] == 0 and counts["samples"] == 0
    return out


def test_a_checkpoint_stops_on_its_templates_turn_end_as_well_as_on_eos(tmp_path, tokenizer):
    """A chat template closing turns with a special token other than the tokenizer's eos
    (here <|endoftext|>, where SmolLM2's eos is <|im_end|>, as Llama-3's <|eot_id|> is not
    its base model's <|end_of_text|>): the checkpoint's end tokens hold both, and the
    engine stops on both."""
    from synthllm.core.llm import checkpoint_stop_ids

    template = tmp_path / "endoftext.jinja"
    template.write_text(tokenizer.chat_template.replace("<|im_end|>", "<|endoftext|>"))
    out = tmp_path / "final"
    run_base_model(
        inputs={},
        outputs={"final": str(out), "counts": str(tmp_path / "counts.json")},
        settings={"model": {**TINY, "chat_template": str(template)}},
        execution={"threads": 1},
    )
    eos, turn_end = tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert eos != turn_end
    saved = json.loads((out / "generation_config.json").read_text())
    assert sorted(saved["eos_token_id"]) == sorted([eos, turn_end])
    assert sorted(checkpoint_stop_ids(str(out))) == sorted([eos, turn_end])


def test_a_template_whose_turns_end_in_no_special_token_is_refused(tmp_path, tokenizer):
    template = tmp_path / "plain.jinja"
    template.write_text(tokenizer.chat_template.replace("<|im_end|>", "END"))
    with pytest.raises(TrainError, match="chat_template: its assistant turns do not end"):
        run_base_model(
            inputs={},
            outputs={"final": str(tmp_path / "final"), "counts": str(tmp_path / "c.json")},
            settings={"model": {**TINY, "chat_template": str(template)}},
            execution={"threads": 1},
        )


# ---------------------------------------------------------------------------- pure parts


def make_store(mixture: Path, base: Path, out: Path, loss_on: str, max_seq_len: int):
    """The mixture's token store, as the train_tokens job makes it for training."""
    train_tokens.run(
        inputs={"mixture": str(mixture), "base": str(base)},
        outputs={"tokens": str(out)},
        settings={"system_prompt": SYSTEM, "loss_on": loss_on, "max_seq_len": max_seq_len},
        execution={"threads": 1},
    )
    return out


def test_packed_rows_compute_the_losses_of_their_samples_alone_from_label_positions_only(
    tmp_path, tokenizer, tiny_base
):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    write_mixture(tmp_path / "mix.parquet", gsm8k(5), TOKENIZER)
    path = make_store(tmp_path / "mix.parquet", tiny_base, tmp_path / "tokens", "answer", 4096)
    store = train_tokens.open_store(
        path,
        {
            "system_prompt": SYSTEM,
            "loss_on": "answer",
            "max_seq_len": 4096,
            "tokenizer": train_tokens.tokenizer_digest(tokenizer),
        },
    )

    def every_position_loss_sum(rows):
        batch = collate(rows, tokenizer.pad_token_id)
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = model(**batch).logits
        return torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)),
            labels[:, 1:].reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        ).item()

    def loss_sum(rows):
        """What the trainer computes: logits only at the positions that predict a label."""
        with torch.no_grad():
            return label_loss_sum(model, collate(rows, tokenizer.pad_token_id)).item()

    packed = Rows.of(store, 4096, packing=True)
    assert len(packed) == 1 and len(read_row(store, packed, 0).segments) == 5
    unpacked = Rows.of(store, 4096, packing=False)
    alone_rows = [read_row(store, unpacked, i) for i in range(5)]
    # the samples' prompts differ in length, so the batch's first label is a few positions
    # into the longer prompts, and the shorter rows end in padding
    assert len({int(np.argmax(r.labels != IGNORE)) for r in alone_rows}) > 1
    alone = loss_sum(alone_rows)
    assert alone == pytest.approx(every_position_loss_sum(alone_rows), rel=1e-5)
    assert loss_sum([read_row(store, packed, 0)]) == pytest.approx(alone, rel=1e-5)
    assert loss_sum([read_row(store, packed, 0)]) == pytest.approx(
        every_position_loss_sum([read_row(store, packed, 0)]), rel=1e-5
    )


def test_gradient_accumulation_is_derived_from_the_global_batch():
    assert gradient_accumulation(512, 4, 8) == 16
    assert gradient_accumulation(8, 2, 2) == 2
    with pytest.raises(TrainError, match="train.global_batch_size.*2 x 3 = 6"):
        gradient_accumulation(8, 2, 3)


def test_every_epoch_sees_every_item_once_in_a_fixed_order():
    n, batch = 23, 8
    per_epoch = steps_per_epoch(n, batch)
    assert per_epoch == 3
    for epoch in range(2):
        seen = np.concatenate(
            [step_items(n, batch, epoch * per_epoch + s, seed=5)[1] for s in range(per_epoch)]
        )
        assert sorted(seen.tolist()) == list(range(n))
    a = step_items(n, batch, 0, seed=5)[1]
    assert np.array_equal(a, step_items(n, batch, 0, seed=5)[1])
    assert not np.array_equal(a, step_items(n, batch, per_epoch, seed=5)[1])
    assert step_items(n, batch, per_epoch, seed=5)[0] == 1


def test_rank_micro_batches_split_a_step_and_pad_short_batches():
    items = np.arange(8)
    slots = [rank_micro_batches(items, r, 2, 2, 2) for r in range(2)]
    assert sorted(i for rank in slots for s in rank for i in s) == list(range(8))
    short = [rank_micro_batches(np.arange(3), r, 2, 2, 2) for r in range(2)]
    assert short[0] == [[0, 2], []] and short[1] == [[1], []]


def test_linear_schedule_warms_up_then_decays_to_zero():
    factors = [linear_schedule(s, 10, 2) for s in range(10)]
    assert factors[0] < factors[1] < factors[2] == 1.0
    assert all(a > b for a, b in zip(factors[2:], factors[3:]))
    assert linear_schedule(0, 4, 0) == 1.0 and linear_schedule(3, 4, 0) == 0.25


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"precision": "fp16"}, "train.precision"),
        ({"zero_stage": 4}, "train.zero_stage"),
        ({"loss_on": "question"}, "train.loss_on"),
        ({"warmup_ratio": 1.0}, "train.warmup_ratio"),
        ({"learning_rate": 0}, "train.learning_rate"),
        ({"lr": 1e-5}, r"unknown setting\(s\) \['lr'\]"),
        ({"checkpoint_every": 5}, r"unknown setting\(s\) \['checkpoint_every'\]"),
    ],
)
def test_bad_settings_name_the_key(cfg, message):
    with pytest.raises(TrainError, match=message):
        TrainSettings.from_config({**TRAINING, **cfg})


def test_bad_model_entries_name_the_key():
    with pytest.raises(TrainError, match="init"):
        TrainModel.from_config({**TINY, "init": "random"}, key="models.train[0]")
    with pytest.raises(TrainError, match=r"models.train\[0\]: missing setting\(s\) \['seed'\]"):
        TrainModel.from_config({k: v for k, v in TINY.items() if k != "seed"}, "models.train[0]")
    with pytest.raises(TrainError, match=r"models.train\[0\].architecture.*hidden_sizes"):
        TrainModel.from_config({**TINY, "architecture": {"hidden_sizes": 8}}, key="models.train[0]")
    bad_heads = {**TINY, "architecture": {**TINY["architecture"], "num_attention_heads": 3}}
    with pytest.raises(TrainError, match="not a multiple of num_attention_heads"):
        materialise_base(TrainModel.from_config(bad_heads), "/nonexistent/final", "/nonexistent/c")


# ---------------------------------------------------------------------------- real runs

# 16 samples, global batch 4 (micro 1 x 2 accumulation x 2 processes), 2 epochs = 8 steps
SETTINGS = {
    **TRAINING,
    "zero_stage": 2,
    "micro_batch_size": 1,
    "global_batch_size": 4,
    "max_seq_len": 96,
    "loss_on": "all",
    "learning_rate": 3e-3,
    "warmup_ratio": 0.25,
    "epochs": 2,
    "seed": 3,
}
EXECUTION = {
    # 2 threads for the job: 1 per process
    "threads": 2,
    "training": {**TRAINING_EXECUTION, "checkpoint_every": 2, "keep_checkpoints": 1},
}


def torchrun(
    tokens: Path, base: Path, out: Path, execution: dict = EXECUTION, **overrides
) -> subprocess.Popen:
    """`synthllm train` under torchrun, as rules/10_train.smk launches it on CPU."""
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT / "workflow"),
    }
    parts = {
        "inputs": {"tokens": str(tokens), "base": str(base)},
        "outputs": {
            "final": str(out / "final"),
            "counts": str(out / "counts.json"),
            "log": str(out / "log.jsonl"),
        },
        "settings": {"training": {**SETTINGS, **overrides}, "system_prompt": SYSTEM},
        "execution": execution,
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "synthllm",
        "train",
    ] + [arg for name, part in parts.items() for arg in (f"--{name}", json.dumps(part))]
    log = open(out.parent / f"{out.name}.log", "w")
    return subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def finish(proc: subprocess.Popen, out: Path) -> dict:
    rc = proc.wait(timeout=300)
    assert rc == 0, (out.parent / f"{out.name}.log").read_text()[-3000:]
    return json.loads((out / "counts.json").read_text())


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def mixture16(tmp_path_factory, tiny_base):
    """16 samples and their token store for SETTINGS (the path of the store, the tokens)."""
    folder = tmp_path_factory.mktemp("mix")
    tokens = write_mixture(folder / "mix.parquet", gsm8k(16), TOKENIZER)
    store = make_store(
        folder / "mix.parquet",
        tiny_base,
        folder / "tokens",
        SETTINGS["loss_on"],
        SETTINGS["max_seq_len"],
    )
    return store, tokens


@pytest.fixture(scope="module")
def straight(tmp_path_factory, mixture16, tiny_base):
    """An uninterrupted 2-process ZeRO-2 run: the reference of the runs below."""
    out = tmp_path_factory.mktemp("straight") / "out"
    return out, finish(torchrun(mixture16[0], tiny_base, out), out)


def assert_same_weights(a_dir: Path, b_dir: Path, base: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(a_dir)
    b = AutoModelForCausalLM.from_pretrained(b_dir)
    start = AutoModelForCausalLM.from_pretrained(base)
    for (name, pa_), pb, p0 in zip(a.named_parameters(), b.parameters(), start.parameters()):
        assert torch.allclose(pa_, pb, atol=1e-5), name
        assert not torch.equal(pa_, p0), f"{name} did not train"


def test_two_process_run_killed_and_resumed_ends_where_an_uninterrupted_one_does(
    tmp_path, mixture16, tiny_base, straight
):
    mixture, tokens = mixture16
    straight_dir, counts = straight
    assert counts["tokens"] == tokens and counts["samples"] == 16
    assert counts["steps"] == 8 and counts["world_size"] == 2
    assert counts["gradient_accumulation"] == 2 and counts["resumed_from_step"] == 0
    log = read_log(straight_dir)
    assert [e["step"] for e in log] == list(range(1, 9))
    assert log[-1]["loss"] < log[0]["loss"]
    assert not (straight_dir / "checkpoints").exists()

    # the same run, its launcher SIGKILLed once step 3 is logged, then rerun
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    proc = torchrun(mixture, tiny_base, resumed)
    progress = resumed / "checkpoints" / "log.jsonl"
    deadline = time.monotonic() + 240
    while not (
        (resumed / "checkpoints" / "resume.json").exists()
        and progress.exists()
        and progress.read_text().count("\n") >= 3
    ):
        assert proc.poll() is None, (resumed.parent / "resumed.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the run to kill never reached step 3"
        time.sleep(0.2)
    import psutil

    workers = psutil.Process(proc.pid).children(recursive=True)
    assert len(workers) >= 2
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher; its workers must die with it
    proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"workers outlived the killed launcher: {alive}"
    assert not (resumed / "final").exists()
    again = finish(torchrun(mixture, tiny_base, resumed), resumed)
    assert again["resumed_from_step"] >= 2
    assert again["final_loss"] == pytest.approx(counts["final_loss"], rel=1e-4)
    relog = read_log(resumed)
    assert [e["step"] for e in relog] == list(range(1, 9))
    assert [e["loss"] for e in relog] == pytest.approx([e["loss"] for e in log], rel=1e-4)
    assert_same_weights(straight_dir / "final", resumed / "final", tiny_base)
    assert (resumed / "final" / "model.safetensors").exists()
    assert "im_start" in (resumed / "final" / "chat_template.jinja").read_text()


def test_zero3_partitioned_run_trains_and_saves_the_same_model(
    tmp_path, mixture16, tiny_base, straight
):
    out = tmp_path / "zero3"
    counts = finish(torchrun(mixture16[0], tiny_base, out, zero_stage=3), out)
    assert counts["final_loss"] == pytest.approx(straight[1]["final_loss"], rel=1e-4)
    assert_same_weights(straight[0] / "final", out / "final", tiny_base)


def test_sigterm_to_every_process_checkpoints_that_step_and_the_rerun_resumes(
    tmp_path, mixture16, tiny_base, straight
):
    """SIGTERM to the launcher and both ranks at once, as SLURM's --signal before the time
    limit: the ranks stop at the same step boundary, save a checkpoint of that step (none is
    due by the cadence), the job exits non-zero with the stop line, and the rerun resumes
    from it and ends where the uninterrupted run does."""
    import psutil

    mixture, _ = mixture16
    straight_dir, counts = straight
    # no periodic checkpoint in this run: the one found must be the stop's
    execution = {**EXECUTION, "training": {**EXECUTION["training"], "checkpoint_every": 100}}
    out = tmp_path / "stopped"
    proc = torchrun(mixture, tiny_base, out, execution)
    progress = out / "checkpoints" / "log.jsonl"
    deadline = time.monotonic() + 240
    while not (progress.exists() and progress.read_text().count("\n") >= 2):
        assert proc.poll() is None, (tmp_path / "stopped.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the run to stop never reached step 2"
        time.sleep(0.1)
    for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
        p.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=120)
    text = (tmp_path / "stopped.log").read_text()
    assert rc != 0, text[-3000:]
    stops = re.findall(r"train: stopped by SIGTERM after step (\d+) of 8", text)
    assert len(stops) == 1, text[-3000:]  # said once, by rank 0
    step = int(stops[0])
    assert 2 <= step < 8
    resume = json.loads((out / "checkpoints" / "resume.json").read_text())
    assert resume["step"] == step and (out / "checkpoints" / resume["tag"]).is_dir()
    assert not (out / "final").exists() and not (out / "counts.json").exists()

    again = finish(torchrun(mixture, tiny_base, out, execution), out)
    assert again["resumed_from_step"] == step
    assert again["final_loss"] == pytest.approx(counts["final_loss"], rel=1e-4)
    relog = read_log(out)
    assert [e["step"] for e in relog] == list(range(1, 9))
    assert [e["loss"] for e in relog] == pytest.approx(
        [e["loss"] for e in read_log(straight_dir)], rel=1e-4
    )
    assert_same_weights(straight_dir / "final", out / "final", tiny_base)
