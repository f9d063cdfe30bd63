# Paths, wildcard constraints and input functions shared by the rule files.
import glob
import os

ORDERS = config["orders"]
SEEDS = config["seeds"]
METHODS = config["methods"]
REFERENCES = config["references"]
EXPERIMENT_TASKS = sorted({task for order in ORDERS.values() for task in order})
CACHE = config["cache_dir"]


wildcard_constraints:
    order="|".join(ORDERS),
    method="|".join(METHODS) if METHODS else "no-method",
    seed=r"\d+",
    stage=r"\d+",
    task="|".join(EXPERIMENT_TASKS),


def stages(order):
    return range(1, len(ORDERS[order]) + 1)


def chain_dir(order, method, seed, stage):
    """Run folder of training stage `stage` (0 = the base model)."""
    if int(stage) == 0:
        return "results/runs/base"
    return f"results/runs/{order}/{method}/seed{seed}/stage{stage}"


def chain_runs():
    """Every (order, method, seed, stage) run folder, stage 0 included once."""
    runs = ["results/runs/base"]
    for order in ORDERS:
        for method in METHODS:
            for seed in SEEDS:
                runs += [chain_dir(order, method, seed, k) for k in stages(order)]
    return runs


def reference_runs():
    runs = []
    for seed in SEEDS:
        if "multitask" in REFERENCES:
            runs.append(f"results/runs/multitask/seed{seed}")
        if "single_task" in REFERENCES:
            runs += [f"results/runs/single_task/seed{seed}/{task}" for task in EXPERIMENT_TASKS]
    return runs


def source_files(wildcards=None):
    """Input files of every configured data source, so editing one reruns ingestion."""
    files = []
    for source in config["data"]["sources"]:
        path = source.get("path")
        if not path:
            continue
        if os.path.isdir(path):
            files += sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True) if os.path.isfile(f))
        else:
            files.append(path)
        if source.get("task_list"):
            files.append(source["task_list"])
    return files


def needs_example_embeddings():
    return "prototype_data" in METHODS
