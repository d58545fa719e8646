"""`synthllm plan`: what a config will cost, before any job runs.

    synthllm plan --configfile config/paper.yaml [--configfile more.yaml] [targets...]

prints one row per stage (Snakemake rule): its jobs, GPUs per job, GPU-hours at the runtime
limits the jobs ask SLURM for at their first attempt, the tokens the stage generates,
trains on or reads, GPU-hours from a throughput estimate, model loads (jobs that start an
LLM engine) and the disk of its outputs; then totals and footnotes naming every assumption.

The jobs, their resources (gpu, runtime, mem_mb, threads) and the merged, validated config
come from Snakemake itself (its Python API builds the same DAG as `snakemake -n`); only the
sizes and speeds are ours: the editable tables below. They are rough assumptions, not
measurements: edit them with `sacct` (Elapsed) and the `tokens_per_s` of train counts.json
once the first jobs have run.

Modules: `rates` (the editable tables of speeds and sizes), `estimate` (the pure
arithmetic: sizes, work_of, plan_rows), `report` (the table and its footnotes), `dag` (the
I/O: Snakemake's DAG, row counts of local files, the command).
"""
