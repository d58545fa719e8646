# Config access and input functions of the paper's other experiments (rules/experiments/).
# Each experiment runs the main chain's stage rules again as chains of its own (Chain in
# rules/common.smk): their roots, inputs and settings are here and in its file.
import math


wildcard_constraints:
    method=r"rephrase|persona",


AUGMENTED = f"{RESULTS}/augmentation"
# the augmentation's question chain: every method's questions on the experiment documents
AUGMENTATION_QUESTIONS = f"{AUGMENTED}/questions"
ONE_SHARD = "00000-of-00001"  # the experiment documents are one question shard
ONE_SUBSET = "000-of-001"  # and one concept-graph subset


def experiment_docs():
    return f"{RESULTS}/experiments/docs.parquet"


def experiment_extract():
    return f"{RESULTS}/experiments/extract.parquet"


def experiment_models(key):
    """Config key <key>.models (null: every model of models.train), checked."""
    labels = config[key]["models"] or train_labels()
    unknown = [m for m in labels if m not in train_models()]
    if unknown:
        raise WorkflowError(f"config key {key}.models: {unknown} are not labels of models.train")
    return labels


def experiment_eval_dir(chain_root, model, budget):
    return f"{chain_root}/eval/{model}/{budget}"


def eval_inputs(runs):
    """The named inputs of a stage that reads the eval folders of `runs()` ((label, folder)
    pairs): one file of each folder per name, in run order (synthllm.experiments.docs.eval_runs).
    Functions, so that a config without an experiment's sets fails only when asked for it."""
    files = {
        "predictions": "predictions.parquet",
        "eval_settings": "settings.json",
        "nll": "nll.parquet",
    }
    return {
        name: lambda wildcards, file=file: [f"{folder}/{file}" for _, folder in runs()]
        for name, file in files.items()
    }


def run_labels(runs):
    """The labels of `runs()`, in order: the settings that go with eval_inputs."""
    return [label for label, _ in runs()]


def config_settings(key):
    """The settings part of config key `key` (its execution knobs left out): a value of an
    experiment's own config that replaces a main-chain stage's setting in a `job`."""
    return settings_of(config, part=key)[0]["part"]


def ablation_sets():
    sets = config["ablation"]["sets"]
    unknown = [s for s in sets if s not in config["mixtures"]["sets"]]
    if unknown:
        raise WorkflowError(f"config key ablation.sets: {unknown} are not in mixtures.sets")
    return sets


def ablation_root(level_set):
    return f"{RESULTS}/ablation/{level_set}"


def ablation_runs():
    """(label, eval folder) of every row of the table: each model's base, then its sets."""
    samples = config["ablation"]["samples"]
    runs = []
    for model in experiment_models("ablation"):
        runs.append(("base", f"{RESULTS}/eval/{model}/0"))
        runs += [
            (s, experiment_eval_dir(ablation_root(s), model, samples)) for s in ablation_sets()
        ]
    return runs


def augmentation_target_per_doc():
    """Questions generated per document: the largest count with the over-generation margin."""
    augmentation = config["augmentation"]
    return math.ceil(max(augmentation["questions_per_doc"]) * augmentation["overgenerate"])


def augmentation_budgets():
    """The training sample counts: documents x questions per document (paper 50K ... 300K)."""
    documents = config["experiments"]["documents"]
    return sorted({documents * n for n in config["augmentation"]["questions_per_doc"]})


def augmentation_expand_job(wildcards):
    """An expansion job's own settings: its method, the method's sampling, the questions to
    generate (documents x augmentation_target_per_doc) and, for persona, the draws' seed."""
    method = wildcards.method
    job = {
        "method": method,
        "sampling": config_settings(f"augmentation.{method}.sampling"),
        "target": augmentation_target_per_doc() * config["experiments"]["documents"],
    }
    if method == "persona":
        job["persona_seed"] = config["augmentation"]["persona"]["seed"]
    return job


def augmentation_level3_set_count():
    """Concept sets of the Level-3 job: enough for the target at questions_per_set each."""
    level3 = config["augmentation"]["level3"]
    target = augmentation_target_per_doc() * config["experiments"]["documents"]
    return math.ceil(target / level3["questions_per_set"])


def augmentation_mixture_job(wildcards):
    """A method's nested subset: the whole pool's order (no levels, no proportions), sized
    by documents x questions per document (augmentation_budgets)."""
    return {
        "name": wildcards.mixture,
        "samples": int(wildcards.budget),
        "levels": None,
        "proportions": None,
        "size_key": "experiments.documents x augmentation.questions_per_doc",
    }


def persona_file():
    return config["augmentation"]["persona"]["file"]


def augmentation_methods():
    return config["augmentation"]["methods"]


def augmentation_root(method):
    """The chain of a method: its questions answered, cleaned, mixed, trained, evaluated."""
    return f"{AUGMENTED}/{method}"


def augmentation_questions(method):
    """The question file of a method, in the augmentation's question chain."""
    return f"{AUGMENTATION_QUESTIONS}/{method}/shard-{ONE_SHARD}.parquet"


def augmentation_runs():
    """(method, eval folder) of every point of the figure."""
    return [
        (method, experiment_eval_dir(augmentation_root(method), model, budget))
        for model in experiment_models("augmentation")
        for method in augmentation_methods()
        for budget in augmentation_budgets()
    ]


def diversity_level_job(wildcards):
    """Calls and questions per document of the diversity experiment, on every document."""
    return {
        "calls_per_doc": config["diversity"]["calls_per_doc"],
        "questions_per_doc": config["diversity"]["questions_per_doc"],
    }


def register_ablation_chain(level_set):
    """The chain of a level set: its mixture of the main pool, trained and evaluated."""
    root = ablation_root(level_set)
    register_chain(
        Chain(
            root,
            inputs={
                "mixture": {"pool": f"{RESULTS}/mixtures/pool.parquet"},
                "train_tokens": {"mixture": f"{root}/mixtures/{level_set}/{{budget}}.parquet"},
            },
            jobs={"mixture": lambda wildcards: mixture_job(wildcards, size_key="ablation.samples")},
        )
    )


def augmentation_level2_job(wildcards):
    """Level-2 of the question chain: its calls per document, enough questions for the
    largest count (augmentation_target_per_doc)."""
    return {
        "calls_per_doc": config["augmentation"]["level2"]["calls_per_doc"],
        "questions_per_doc": augmentation_target_per_doc(),
    }


def augmentation_walks_job(wildcards):
    """The walks of the question chain: the main chain's, over augmentation.level3.walk_epochs."""
    walks = {
        **config_settings("graph.walks"),
        "epochs": config["augmentation"]["level3"]["walk_epochs"],
    }
    return {"subset": wildcards.subset, "walks": walks}


def augmentation_level3_job(wildcards):
    """Level-3 of the question chain: its calls and questions per concept set."""
    level3 = config["augmentation"]["level3"]
    return {
        "calls_per_set": level3["calls_per_set"],
        "questions_per_set": level3["questions_per_set"],
    }


def register_method_chain(method):
    """The chain of a method: its questions answered, cleaned, mixed, trained, evaluated."""
    root = augmentation_root(method)
    step = "dedup" if config["augmentation"]["deduplicate"] else "usable"
    register_chain(
        Chain(
            root,
            inputs={
                "answer": {"questions": [augmentation_questions(method)]},
                "dedup": {"answers": [f"{root}/answer/shard-{ONE_SHARD}.parquet"]},
                "decontam": {"questions": f"{root}/{step}/questions.parquet"},
                "train_tokens": {"mixture": f"{root}/mixtures/{method}/{{budget}}.parquet"},
            },
            jobs={"mixture": augmentation_mixture_job},
        )
    )


def ablation_outside():
    """[label, group] of the outside models (config models.outside) whose group is one of
    the ablation's models, in config order: rows of Table 3 (the paper's Instruct rows)."""
    models = experiment_models("ablation")
    return [[m["label"], m["group"]] for m in config["models"]["outside"] if m["group"] in models]


def ablation_outside_files(name):
    return [f"{RESULTS}/eval/{label}/0/{name}" for label, _ in ablation_outside()]
