"""The filtered shards (paper §4.1): the documents of a corpus shard kept by the last
filtering iteration (synthllm.stages.classifiers), which the generation stages read (reference_docs).

Output schema (`filter/docs/shard-*.parquet`): the corpus columns (synthllm.stages.corpus) plus
    scores  list<float64>  one per iteration 0..T (0: the cold-start classifier)
    score   float64        the last
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synthllm.core.files import write_counts, write_parquet_table
from synthllm.stages.classifiers import FilterError, load_scores, shard_name_of


def shard_scores(path: str, name: str) -> pa.Table:
    """The scores of one shard's documents in an iteration's scores file, in row order."""
    t = load_scores(path)
    t = t.filter(pc.equal(t.column("shard"), name))
    return t.sort_by("row")


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The documents of inputs["shard"] kept by the last iteration, with the scores of every
    iteration (inputs["scores"], iterations 0..T). No settings (rules/02_filter.smk)."""
    shard, scores = inputs["shard"], inputs["scores"]
    name = shard_name_of(shard)
    table = pq.read_table(shard)
    per_iteration, kept = [], None
    for path in scores:
        s = shard_scores(path, name)
        if s.num_rows != table.num_rows:
            raise FilterError(
                f"{path}: {s.num_rows} scores for shard {name}, which has "
                f"{table.num_rows} documents"
            )
        per_iteration.append(s.column("score").to_numpy())
        kept = s.column("kept").to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(kept)
    out = table.take(pa.array(rows, pa.int64()))
    matrix = np.stack(per_iteration, axis=1)[rows] if len(rows) else np.zeros((0, len(scores)))
    out = out.append_column(
        "scores", pa.array([list(map(float, m)) for m in matrix], pa.list_(pa.float64()))
    )
    out = out.append_column("score", pa.array(matrix[:, -1] if len(rows) else [], pa.float64()))
    write_parquet_table(out, outputs["docs"])
    return write_counts(
        outputs["counts"],
        "filter_docs",
        table.num_rows,
        len(rows),
        {"below_threshold": table.num_rows - len(rows)},
        iterations=len(scores) - 1,
    )
