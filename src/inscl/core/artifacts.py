"""Every parquet artifact of the DAG: its path and its columns with their arrow types, declared once.

Writers call ``write(frame, name, path)``: the frame is cast to the declared schema (a missing
column is an error) and written atomically. Readers call ``read(path, name, columns)``: a file
that lacks a declared column is a one-line InputError naming the file and the column. Paths of
the fixed artifacts live here too (per-run files are in ``inscl.core.runs``).

Types are written as short strings so that importing this module costs nothing (the Snakefile
reads the paths at start-up); ``arrow_schema`` builds the pyarrow schema on use.
"""

from __future__ import annotations

from dataclasses import dataclass

from inscl.core.io import InputError, atomic_path

TAG = "struct<tag:string,explanation:string>"


@dataclass(frozen=True)
class Artifact:
    columns: tuple[tuple[str, str], ...]
    path: str | None = None  # fixed path; None for per-run, per-order or per-stage files

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]


def _columns(spec: str) -> tuple[tuple[str, str], ...]:
    """'a:string b:int64' -> (('a', 'string'), ('b', 'int64'))."""
    return tuple(tuple(item.split(":", 1)) for item in spec.split())  # type: ignore[misc]


INSTANCE_COLUMNS = (
    "task:string split:string instance_id:string instruction_id:string instruction:string input:string "
    "output:list<string> source:string source_task:string source_file:string"
)

ARTIFACTS: dict[str, Artifact] = {
    "instances": Artifact(_columns(INSTANCE_COLUMNS), "results/data/instances.parquet"),
    "tasks": Artifact(
        _columns("task:string source:string n_train:int64 n_eval:int64 n_test:int64 n_instructions:int64"),
        "results/data/tasks.parquet",
    ),
    # one row per source task or (instruction, split) a data filter removed; filter = its config key
    "dropped": Artifact(
        _columns(
            "source:string source_file:string source_task:string task:string instruction_id:string split:string "
            "n_dropped:int64 n_kept:int64 filter:string reason:string"
        ),
        "results/data/dropped.parquet",
    ),
    "embeddings": Artifact(
        _columns("instruction_id:string text:string model:string vector:list<float32>"),
        "results/instructions/embeddings.parquet",
    ),
    "example_embeddings": Artifact(
        _columns("instance_id:string task:string model:string vector:list<float32>"),
        "results/instructions/example_embeddings.parquet",
    ),
    "tags_raw": Artifact(
        _columns(
            f"instruction_id:string instruction:string tags:list<{TAG}> backend:string model:string "
            "prompt_version:string prompt_tokens:int64 completion_tokens:int64 cost_usd:float64 status:string "
            "error:string raw:string"
        ),
        "results/instructions/tags_raw.parquet",
    ),
    "tags": Artifact(_columns("instruction_id:string tags:list<string>"), "results/instructions/tags.parquet"),
    "tag_map": Artifact(
        _columns("raw:string normalized:string canonical:string count:int64 cluster:int64"),
        "results/instructions/tag_map.parquet",
    ),
    "insinfo": Artifact(
        _columns("order:string stage:int64 task:string instruction_id:string n_tags:int64 insinfo:float64"),
        "results/instructions/insinfo.parquet",
    ),
    "distances": Artifact(
        _columns(
            "task_a:string task_b:string distance:float64 solver:string converged:bool n_iter:int64 "
            "max_iter:int64 seconds:float64 n_a:int64 n_b:int64"
        ),
        "results/replay/distances.parquet",
    ),
    "replay_stage": Artifact(
        _columns(
            INSTANCE_COLUMNS + " stage:int64 current_task:string method:string quota:int64 score:float64 "
            "distance:float64 reason:string"
        )
    ),
    "composition": Artifact(
        _columns(
            "order:string method:string seed:int64 stage:int64 current_task:string source_task:string n_examples:int64"
        )
    ),
    "train_log": Artifact(
        _columns(
            "step:int64 epoch:float64 loss:float64 learning_rate:float64 tokens_per_s:float64 "
            "peak_memory_mb:float64 elapsed_s:float64"
        )
    ),
    # prompt_tokens: after truncation; finish: eos, stop (a stop string) or length (max_new_tokens)
    "predictions": Artifact(
        _columns(
            "task:string instance_id:string prompt:string prediction:string references:list<string> "
            "prompt_tokens:int64 truncated_tokens:int64 max_new_tokens:int64 generated_tokens:int64 finish:string"
        )
    ),
    # one row per task and metric; `primary` marks the metric the score matrix uses
    "scores": Artifact(_columns("task:string metric:string primary:bool score:float64 n:int64")),
    "score_matrix": Artifact(
        _columns("order:string method:string seed:int64 stage:int64 task:string task_index:int64 score:float64"),
        "results/metrics/score_matrix.parquet",
    ),
    "cl_metrics": Artifact(
        _columns("order:string method:string seed:int64 metric:string task:string stage:int64 value:float64"),
        "results/metrics/cl_metrics.parquet",
    ),
    "summary": Artifact(
        _columns("order:string method:string metric:string mean:float64 std:float64 n_seeds:int64"),
        "results/metrics/summary.parquet",
    ),
    "verdicts": Artifact(
        _columns(
            "set:string prompt_id:string prompt:string answer_model:string answer_base:string verdict_ab:string "
            "verdict_ba:string outcome:string cost_usd:float64 error:string"
        )
    ),
    "judge_summary": Artifact(
        _columns(
            "set:string n:int64 win:int64 tie:int64 lose:int64 win_rate:float64 tie_rate:float64 "
            "lose_rate:float64 delta:float64 cost_usd:float64"
        )
    ),
    "general": Artifact(_columns("task:string metric:string value:float64")),
    "general_delta": Artifact(
        _columns("run:string task:string metric:string before:float64 after:float64 delta:float64"),
        "results/metrics/general_delta.parquet",
    ),
    "judge_rates": Artifact(
        _columns(
            "run:string set:string n:int64 win:int64 tie:int64 lose:int64 win_rate:float64 tie_rate:float64 "
            "lose_rate:float64 delta:float64 cost_usd:float64"
        ),
        "results/metrics/judge.parquet",
    ),
    # TRACE's baselines and InsCL's forgetting analysis (docs/trace_baselines.md)
    "general_data": Artifact(_columns(INSTANCE_COLUMNS), "results/data/general.parquet"),
    # one extra epoch after a stage (trace_general_replay), in pass order
    "extra_pass": Artifact(
        _columns(INSTANCE_COLUMNS + " stage:int64 current_task:string method:string position:int64 reason:string")
    ),
    "rationales": Artifact(
        _columns(
            "task:string instance_id:string answer:string rationale:string target:string backend:string "
            "model:string prompt_version:string prompt_tokens:int64 completion_tokens:int64 cost_usd:float64 "
            "status:string error:string"
        ),
        "results/rcl/rationales.parquet",
    ),
    # the instances with every training answer replaced by its RCL target (test references unchanged)
    "rcl_instances": Artifact(_columns(INSTANCE_COLUMNS), "results/rcl/instances.parquet"),
    "icl_demonstrations": Artifact(
        _columns("task:string rank:int64 instance_id:string label:string tokens:int64 reason:string")
    ),
    "icl_shots": Artifact(_columns("task:string instance_id:string shots:int64 prompt_tokens:int64")),
    "forgetting": Artifact(
        _columns(
            "order:string method:string seed:int64 task:string task_index:int64 instance_id:string metric:string "
            "score_learned:float64 score_final:float64 answer_final:string category:string reason:string "
            "classifier:string status:string cost_usd:float64"
        )
    ),
}


def path(name: str) -> str:
    artifact = ARTIFACTS[name]
    if artifact.path is None:
        raise KeyError(f"artifact {name!r} has no fixed path")
    return artifact.path


def columns(name: str) -> list[str]:
    return ARTIFACTS[name].names


def _arrow_type(spec: str):
    import pyarrow as pa

    if spec.startswith("list<") and spec.endswith(">"):
        return pa.list_(_arrow_type(spec[5:-1]))
    if spec.startswith("struct<") and spec.endswith(">"):
        return pa.struct(
            [(field, _arrow_type(kind)) for field, kind in (f.split(":", 1) for f in spec[7:-1].split(","))]
        )
    return {
        "string": pa.string(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "float32": pa.float32(),
        "bool": pa.bool_(),
    }[spec]


def arrow_schema(name: str):
    import pyarrow as pa

    return pa.schema([(column, _arrow_type(kind)) for column, kind in ARTIFACTS[name].columns])


def to_table(frame, name: str):
    """A pandas frame, an arrow table or a list of row dicts as an arrow table of the artifact's
    schema (extra columns dropped)."""
    import pyarrow as pa

    schema = arrow_schema(name)
    if isinstance(frame, list):
        frame = pa.Table.from_pylist([{k: row.get(k) for k in schema.names} for row in frame], schema=schema)
    present = frame.column_names if isinstance(frame, pa.Table) else list(frame.columns)
    missing = [column for column in schema.names if column not in present]
    if missing:
        raise ValueError(f"artifact {name!r}: missing column {missing[0]!r}")
    if isinstance(frame, pa.Table):
        return frame.select(schema.names).cast(schema)
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


def write(frame, name: str, path) -> None:
    """Write `frame` as artifact `name` at `path`, atomically (a failure leaves no partial file)."""
    import pyarrow.parquet as pq

    table = to_table(frame, name)
    with atomic_path(path, ".parquet") as tmp:
        pq.write_table(table, tmp)


def read(path, name: str, columns: list[str] | None = None):
    """Read artifact `name` (all its columns, or `columns`) as a pandas frame."""
    import pyarrow.parquet as pq

    wanted = list(columns) if columns is not None else ARTIFACTS[name].names
    present = set(pq.read_schema(path).names)
    missing = [column for column in wanted if column not in present]
    if missing:
        raise InputError(path, f"not a {name} artifact: missing column", field=missing[0])
    return pq.read_table(path, columns=wanted).to_pandas()
