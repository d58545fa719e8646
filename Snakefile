# synthllm: synthetic math data from a pre-training corpus, and its scaling laws
# (a re-implementation of SynthLLM, arXiv 2503.19551). Stages in pipeline order.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/default.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/corpus.smk"
include: "rules/filter.smk"
include: "rules/extract.smk"
include: "rules/graph.smk"
include: "rules/questions.smk"
include: "rules/mixtures.smk"
include: "rules/train.smk"
include: "rules/eval.smk"
include: "rules/scaling.smk"
# the paper's other experiments, not in rule all: snakemake diversity | ablation | augmentation
include: "rules/experiments_common.smk"
include: "rules/experiments.smk"
include: "rules/diversity.smk"
include: "rules/ablation.smk"
include: "rules/augmentation.smk"


check_resource_rules()


rule all:
    default_target: True
    input:
        final_outputs(),
