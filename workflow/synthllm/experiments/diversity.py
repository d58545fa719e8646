"""Question diversity (paper §6 Fig. 5): within-document similarity of Level-1 and Level-2
questions.

On the experiment documents (synthllm.experiments.docs), Level-1 and Level-2 each generate up to
`questions_per_doc` questions per document (paper 50; rules/experiments/diversity.smk). Every question
is embedded with all-MiniLM-L6-v2 (mean-pooled, L2-normalised, as sentence-transformers
does), and the cosine similarity of every unordered pair of questions from the same document
and method is one sample of that method's distribution. Lower similarity = more diverse; the
paper finds Level-2 lower.

Outputs (`diversity/`):
    pairs.parquet    method (string), doc_id (string), similarity (float32): one row per pair
    summary.csv/.md  per method: documents, questions, questions per document (mean),
                     pairs, mean, std, quartiles of the similarity, share of pairs >= 0.9
    fig5.png/.pdf    overlaid histograms (density) on shared bins
    counts.json      questions in, embedded; documents with fewer than 2 questions (no pair)
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from synthllm.core.files import atomic_path, save_figure, write_counts, write_parquet_table
from synthllm.settings import merged

log = logging.getLogger(__name__)

METHODS = ("level1", "level2")  # the question files compared, in output order
PAIR_SCHEMA = {"method": pl.String, "doc_id": pl.String, "similarity": pl.Float32}
NEAR_COPY = 0.9  # pairs at least this similar count as near copies in the summary


def within_group_similarities(
    vectors: np.ndarray, groups: list[str]
) -> tuple[np.ndarray, list[str]]:
    """Cosine similarity of every unordered pair of rows in the same group (rows are
    L2-normalised, so the dot product). Returns the similarities and each pair's group,
    groups in first-seen order, pairs (i < j) in row order."""
    index: dict[str, list[int]] = {}
    for row, group in enumerate(groups):
        index.setdefault(group, []).append(row)
    sims, owners = [], []
    for group, rows in index.items():
        if len(rows) < 2:
            continue
        block = vectors[rows] @ vectors[rows].T
        upper = np.triu_indices(len(rows), k=1)
        sims.append(block[upper])
        owners.extend([group] * len(upper[0]))
    return (np.concatenate(sims).astype(np.float32) if sims else np.zeros(0, np.float32)), owners


def summarize(pairs: pl.DataFrame, questions: pl.DataFrame) -> pl.DataFrame:
    """One row per method: the distribution of its within-document similarities."""
    rows = []
    for method in questions["method"].unique(maintain_order=True).to_list():
        q = questions.filter(pl.col("method") == method)
        per_doc = q.group_by("doc_id").len()
        stored = pairs.filter(pl.col("method") == method)["similarity"].to_numpy()
        s = stored.astype(np.float64)
        quartiles = np.quantile(s, [0.25, 0.5, 0.75]) if len(s) else [np.nan] * 3
        rows.append(
            {
                "method": method,
                "documents": len(per_doc),
                "questions": len(q),
                "questions_per_doc": float(per_doc["len"].mean()) if len(per_doc) else np.nan,
                "pairs": len(s),
                "mean": float(s.mean()) if len(s) else np.nan,
                "std": float(s.std()) if len(s) else np.nan,
                "q25": float(quartiles[0]),
                "median": float(quartiles[1]),
                "q75": float(quartiles[2]),
                # compared at the stored float32 precision: 0.9 in float32 is just below 0.9
                "share_ge_0.9": float((stored >= np.float32(NEAR_COPY)).mean())
                if len(s)
                else np.nan,
            }
        )
    return pl.DataFrame(rows)


def histogram(pairs: pl.DataFrame, bins: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Shared bin edges from min(0, smallest similarity) to 1, and each method's density."""
    low = min(0.0, float(pairs["similarity"].min())) if len(pairs) else 0.0
    edges = np.linspace(low, 1.0, bins + 1)
    density = {}
    for method in pairs["method"].unique(maintain_order=True).to_list():
        s = pairs.filter(pl.col("method") == method)["similarity"].to_numpy()
        density[method] = np.histogram(np.clip(s, low, 1.0), bins=edges, density=True)[0]
    return edges, density


def figure(pairs: pl.DataFrame, summary: pl.DataFrame, bins: int, png: str, pdf: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges, density = histogram(pairs, bins)
    fig, ax = plt.subplots(figsize=(6, 4))
    colours = {"level1": "tab:blue", "level2": "tab:orange"}
    for method, values in density.items():
        mean = summary.filter(pl.col("method") == method)["mean"][0]
        ax.stairs(
            values,
            edges,
            fill=True,
            alpha=0.45,
            color=colours.get(method),
            label=f"{method.replace('level', 'Level-')} (mean {mean:.3f})",
        )
    ax.set_xlabel("cosine similarity of two questions from the same document")
    ax.set_ylabel("density")
    ax.set_title("Within-document question similarity (all-MiniLM-L6-v2)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, png, pdf)
    plt.close(fig)


def load_questions(files: dict[str, str]) -> pl.DataFrame:
    """method, doc_id, question of each method's question file (one document per question)."""
    frames = []
    for method, path in files.items():
        q = pl.read_parquet(path, columns=["doc_ids", "question"])
        frames.append(
            q.select(
                pl.lit(method).alias("method"),
                pl.col("doc_ids").list.first().alias("doc_id"),
                "question",
            )
        )
    return pl.concat(frames)


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """Fig. 5: inputs level1, level2 (question files of the experiment documents), outputs
    pairs, summary, summary_md, fig5, fig5_pdf, counts. Settings: diversity.embedding as
    embedding, diversity.bins as bins (rules/experiments/diversity.smk)."""
    import torch

    from synthllm.stages.embed import Embedder, EmbeddingSpec

    torch.set_num_threads(execution["threads"])
    embedding = EmbeddingSpec.from_config(merged(settings, execution, "embedding"))
    files = {method: inputs[method] for method in METHODS}
    questions = load_questions(files)
    vectors, truncated = Embedder(embedding).embed(
        questions["question"].to_list(), desc="questions"
    )
    frames = []
    for method in files:
        mine = (questions["method"] == method).to_numpy()
        sims, docs = within_group_similarities(
            vectors[mine], questions.filter(pl.col("method") == method)["doc_id"].to_list()
        )
        frames.append(
            pl.DataFrame(
                {"method": [method] * len(sims), "doc_id": docs, "similarity": sims},
                schema=PAIR_SCHEMA,
            )
        )
    pairs = pl.concat(frames)
    summary = summarize(pairs, questions)
    write_parquet_table(pairs.to_arrow(), outputs["pairs"])
    with atomic_path(outputs["summary"]) as tmp:
        summary.write_csv(tmp, float_precision=4)
    with atomic_path(outputs["summary_md"]) as tmp:
        tmp.write_text(markdown(summary))
    figure(pairs, summary, settings["bins"], outputs["fig5"], outputs["fig5_pdf"])
    singles = {
        m: int((questions.filter(pl.col("method") == m).group_by("doc_id").len()["len"] < 2).sum())
        for m in files
    }
    log.info("\n%s", markdown(summary))
    return write_counts(
        outputs["counts"],
        "diversity",
        len(questions),
        len(questions),
        {},
        pairs=len(pairs),
        truncated=truncated,
        documents_without_pairs=singles,
        model=embedding.model,
        max_tokens=embedding.max_tokens,
    )


def markdown(summary: pl.DataFrame) -> str:
    header = summary.columns
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary.iter_rows():
        lines.append(
            "| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |"
        )
    return "\n".join(lines) + (
        "\n\nCosine similarity of all question pairs within a document "
        "(all-MiniLM-L6-v2); lower = more diverse.\n"
    )
