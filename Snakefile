# synthllm: synthetic math data from a pre-training corpus, and its scaling laws
# (a re-implementation of SynthLLM, arXiv 2503.19551). Stages in pipeline order.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/default.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/01_corpus.smk"
include: "rules/02_filter.smk"
include: "rules/03_extract.smk"
include: "rules/04_graph.smk"
include: "rules/05_questions.smk"
include: "rules/06_answer.smk"
include: "rules/07_dedup.smk"
include: "rules/08_decontam.smk"
include: "rules/09_mixtures.smk"
include: "rules/10_train.smk"
include: "rules/11_evaluate.smk"
include: "rules/12_scaling.smk"
# the paper's other experiments, not in rule all: snakemake diversity | ablation | augmentation
include: "rules/experiments/common.smk"
include: "rules/experiments/shared.smk"
include: "rules/experiments/diversity.smk"
include: "rules/experiments/ablation.smk"
include: "rules/experiments/augmentation.smk"


check_resource_rules()
# generation.shards_per_job: the shard jobs of each generation rule run that many to a SLURM
# allocation, one after another (rules/common.smk shard_group); a local run ignores job groups
if shards_per_job() > 1:
    workflow.register_resource(ENGINE_JOBS, 1)


resource_scopes:
    engine_jobs="local",


# the bookkeeping rules run in the controller's own process (config resources.local_rules);
# what the `localrules:` directive does, for names from the config
workflow.localrules(*config["resources"]["local_rules"])


# Among jobs ready at once the evaluations go last (a priority only orders ready jobs): each
# needs nothing but its checkpoint, so it is ready early, and at one core (evaluate.threads)
# it holds back a two-core stage of the chain behind it; in a default run the outside
# model's evaluation held the embedding back 2.5 minutes with a core idle. Last, they fill
# the cores training leaves.
for stage_rule in workflow.rules:
    if stage_rule.name not in ("evaluate", "eval_nll"):
        stage_rule.priority = 1


# every chain is registered (rules/common.smk Chain): a {chain} is one of their roots
wildcard_constraints:
    chain=chain_roots(),


onstart:
    check_deployment()


rule all:
    default_target: True
    input:
        final_outputs(),
