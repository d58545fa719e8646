"""The pre-flight size check of `synthllm plan`: can the generated questions, after the
answers, dedup and decontamination that drop some, fill the largest training budget of
every mixture? A run that cannot fails at its mixture stage, after all the GPU work; the
plan says so before any job, naming the keys to change.

Expected clean questions per level = generated questions (Sizes.questions: documents x
questions per document, concept sets x questions per set) x the level's keep rate
(synthllm.setup.plan.rates.KEEP_RATE, an assumption from the paper's own counts). A mixture
draws its levels in its proportions (equal when unset), so each level must hold its share.
"""

from __future__ import annotations

from synthllm.setup.plan.estimate import Sizes
from synthllm.setup.plan.rates import KEEP_RATE

# the keys that size each level's questions
LEVEL_KEYS = {
    1: "generation.level1.questions_per_doc",
    2: "generation.level2.questions_per_doc",
    3: "graph.walks.epochs, graph.subsets or generation.level3.questions_per_set",
}


def expected_clean(s: Sizes) -> dict[int, float]:
    """Clean questions per level expected from a config's sizes."""
    return {level: s.questions[f"level{level}"] * KEEP_RATE[level] for level in (1, 2, 3)}


def budgets(config: dict) -> list[tuple[str, int, str]]:
    """(mixture set, samples, the config key that asks for them): the largest budget of the
    scaling ladder (`all`) and the Level ablation's sets."""
    asked = [("all", max(config["mixtures"]["sample_counts"]), "mixtures.sample_counts")]
    for name in config["ablation"]["sets"]:
        if name in config["mixtures"]["sets"]:  # else the ablation's own error names it
            asked.append((name, config["ablation"]["samples"], "ablation.samples"))
    return asked


def check(config: dict, s: Sizes) -> tuple[list[str], list[str]]:
    """(notes, problems): the headroom of every budget, and each one that cannot be filled."""
    clean = expected_clean(s)
    notes, problems = [], []
    for name, samples, key in budgets(config):
        spec = config["mixtures"]["sets"][name]
        levels = spec.get("levels") or [1, 2, 3]
        if spec.get("levels") or spec.get("proportions"):
            shares = spec.get("proportions") or [1] * len(levels)
            need_by_level = {lv: samples * sh / sum(shares) for lv, sh in zip(levels, shares)}
        else:  # the whole pool, whatever its levels' shares
            need_by_level = {}
            if samples > sum(clean.values()) + 0.5:
                problems.append(
                    f"pre-flight: mixture {name!r} needs {samples:,} samples ({key}) but about "
                    f"{sum(clean.values()):,.0f} are expected clean (generated x keep rate per "
                    f"level); raise {'; '.join(LEVEL_KEYS.values())} or lower {key}"
                )
        for level, need in need_by_level.items():
            if need > clean[level] + 0.5:
                problems.append(
                    f"pre-flight: mixture {name!r} needs {need:,.0f} Level-{level} samples "
                    f"({key}) but about {clean[level]:,.0f} are expected clean "
                    f"({s.questions[f'level{level}']:,} generated x keep rate "
                    f"{KEEP_RATE[level]:.2f}); raise {LEVEL_KEYS[level]} or lower {key}"
                )
        total = sum(clean[level] for level in levels)
        notes.append(
            f"pre-flight: mixture {name!r} at {samples:,} samples ({key}): about {total:,.0f} "
            f"clean samples expected of its levels ({round(total / samples - 1, 2):+.0%})"
        )
    notes += uncounted_drops(config)
    return notes, problems


def uncounted_drops(config: dict) -> list[str]:
    """Notes on the drops the keep rates know nothing of, which make the expected clean
    counts above an upper bound: answers below the verification's agreement, and copies
    the decontamination judge finds."""
    out = []
    verify = config["generation"]["answer"]["verify"]
    if verify["samples"] > 1 and verify["min_agreement"] > 0:
        out.append(
            "pre-flight: the keep rates do not count the answers dropped for agreement below "
            f"{verify['min_agreement']} (generation.answer.verify.min_agreement): the clean "
            "counts above are an upper bound; the answer counts' agreement histogram of the "
            "first shards shows the share lost"
        )
    if config["decontam_judge"]["enabled"]:
        out.append(
            "pre-flight: the keep rates do not count the copies the decontamination judge "
            "drops (decontam_judge.enabled): the clean counts above are an upper bound"
        )
    return out
