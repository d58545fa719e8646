"""The editable tables of `synthllm plan`: speeds, model sizes, record sizes, and the
sizes a config cannot give before the run. Rough assumptions, not measurements."""

from __future__ import annotations

import re

# Output tokens/s per GPU at a large batch, prefill included, of the models the configs name.
# Rough public figures for vLLM (v0.6-class, bf16) on A100/H100-class GPUs, NOT measured
# here; scale them to your cluster. `load_min`: minutes to start an engine on the model.
GENERATE = {
    # vLLM serving benchmarks put Llama-3.1-70B at ~2,500-4,000 output tok/s on 4 x H100;
    # scaled by 70/123 for 123B on 8 GPUs: ~400/GPU. Loading: ~20 min (config/paper.yaml).
    "mistralai/Mistral-Large-Instruct-2407": {"tok_s": 400, "load_min": 20},
    # a 72B model on 4 GPUs, as Llama-3.1-70B above: ~700/GPU; ~10 min to load (ours)
    "Qwen/Qwen2.5-Math-72B-Instruct": {"tok_s": 700, "load_min": 10},
    # the evaluated checkpoints on 1 GPU: vLLM's 8B benchmarks on one H100 give ~5,000
    # output tok/s at high concurrency; 1B and 3B by inverse parameter count, capped
    "8B": {"tok_s": 5000, "load_min": 2},
    "3B": {"tok_s": 10000, "load_min": 1},
    "1B": {"tok_s": 20000, "load_min": 1},
}
# any other model: this many output tok/s per GPU per billion parameters (1 / params)
GENERATE_PER_BILLION = 40000
LOAD_MIN_DEFAULT = 5

# Parameters (billions) of the models by name or train label; else parsed from the name
# ("...-8B", "1.6b", "135M"). Model cards: Llama-3.2-1B 1.24B, Llama-3.2-3B 3.21B,
# Llama-3.1-8B 8.03B, StableLM-2-1.6B 1.64B, all-MiniLM-L6-v2 22.7M.
PARAMS_B = {
    "meta-llama/Llama-3.2-1B": 1.24,
    "meta-llama/Llama-3.2-3B": 3.21,
    "meta-llama/Llama-3.1-8B": 8.03,
    "stabilityai/stablelm-2-1_6b": 1.64,
    "sentence-transformers/all-MiniLM-L6-v2": 0.0227,
    "mistralai/Mistral-Large-Instruct-2407": 123.0,
    "Qwen/Qwen2.5-Math-72B-Instruct": 72.7,
}
# embedding width (float32 per value in the .npy): the models' configs
EMBED_DIM = {"stabilityai/stablelm-2-1_6b": 2048, "sentence-transformers/all-MiniLM-L6-v2": 384}
EMBED_DIM_DEFAULT = 1024

# Training and forward passes from FLOPs: 6 N FLOPs per trained token, 2 N per forward token,
# at this share (MFU) of an A100's 312 bf16 TFLOPS: ~40% is the usual figure for
# DeepSpeed ZeRO-2/3 fine-tuning of 1-8B models (an H100 is ~2-3x faster)
PEAK_TFLOPS = 312
MFU = 0.4

# Sizes the config cannot give before the run (paper: ../shared/paper.md)
CORPUS_DOCS = 1_300_000_000  # FineWeb-Edu: 1.3T GPT-2 tokens (card) at ~1,000 per document
FILTERED_DOCS = 520_000  # documents kept by the filter (paper §5.1)
TOPICS_PER_DOC = 32_000 * 5 / 520_000  # ~32K topics per graph of a fifth of them (§5.1)
# bytes per record of the parquet outputs (zstd), ours
RECORD_BYTES = {
    "document": 3000,  # ~4.5 KB of text per FineWeb-Edu document, compressed
    "score": 16,  # doc id and a score
    "extract": 1000,  # topics and key concepts of a document
    "question": 500,  # a question and its provenance
    "set": 1000,  # a concept set and its two reference document ids
    "sample": 2500,  # a question and its answer (~600 tokens, paper §5.1)
    # a sample's token store (synthllm.stages.train_tokens): ~600 int32 ids, its offset
    # (int64) and label start (int32)
    "sample_tokens": 600 * 4 + 8 + 4,
    "eval": 4000,  # a benchmark problem, the completion and its grade
}
# benchmark sizes when their files are not here (the Qwen2.5-Math harness's test sets)
BENCHMARK_RECORDS = {
    "gsm8k": 1319,
    "math": 5000,
    "minerva_math": 272,
    "gaokao2023en": 385,
    "olympiadbench": 675,
    "college_math": 2818,
}

# the rules whose jobs start an LLM engine, and the config key of its model
ENGINES = {
    "synthetic_docs": "models.generator",
    "rate": "models.rater",
    "extract": "models.generator",
    "level1": "models.generator",
    "level2": "models.generator",
    "level3": "models.generator",
    "answer": "models.answerer",
    "evaluate": "evaluate.engine",
    "augmentation_expand": "models.generator",
    "decontam_judge": "models.generator",
}
# the judge's prompt (synthllm.core.prompts/decontam_judge.j2 with two questions of ~80
# tokens each, the paper's median Level-3 length), and what a prompt token costs against a
# decoded one: prefill runs batched at the GPU's compute rate (our assumption, not measured)
JUDGE_PROMPT_TOKENS = 350
PREFILL_COST = 0.1


def params_b(name: str) -> float | None:
    """Billions of parameters of a model by name or label (PARAMS_B, else from the name)."""
    if name in PARAMS_B:
        return PARAMS_B[name]
    found = re.findall(r"(\d+(?:[._]\d+)?)([BbMm])(?![A-Za-z])", name.rsplit("/", 1)[-1])
    if not found:
        return None
    number, unit = found[-1]
    value = float(number.replace("_", "."))
    return value if unit in "Bb" else value / 1000


def tokens_per_s(kind: str, model: str, label: str | None = None) -> float | None:
    """Tokens/s per GPU of `kind` work on a model (the tables above); None when unknown."""
    if kind == "generate":
        for key in (model, label):
            if key in GENERATE:
                return GENERATE[key]["tok_s"]
        billions = params_b(label or "") or params_b(model)
        return GENERATE_PER_BILLION / billions if billions else None
    billions = params_b(model) or params_b(label or "")
    if not billions:
        return None
    flops_per_token = (6 if kind == "train" else 2) * billions * 1e9
    return PEAK_TFLOPS * 1e12 * MFU / flops_per_token


def load_minutes(model: str, label: str | None = None) -> float:
    for key in (model, label):
        if key in GENERATE:
            return GENERATE[key]["load_min"]
    return LOAD_MIN_DEFAULT


# share of a level's generated questions that reach the clean pool (a usable answer, not a
# duplicate, not contaminated): Level-1 from the paper's own counts (5 questions for each of
# ~520K documents = 2.6M generated, 2.3M after dedup and decontamination, §4.3; extraction
# repeats questions), Levels 2 and 3 assumed to lose 5 % (the paper: 2.6M each after)
KEEP_RATE = {1: 2.3 / 2.6, 2: 0.95, 3: 0.95}
