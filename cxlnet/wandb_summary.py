"""A W&B summary run per table row (`job_type: summary`): W&B groups a sweep's seed runs but cannot
show max / mean / std over them, so the row's statistics and per-seed table are logged as one run.
Its id is derived from the table, the row and the configuration hash, so a re-run of the table
updates that run instead of adding another. WANDB_MODE=offline keeps it on disk."""
from __future__ import annotations

import hashlib
from pathlib import Path


def summary_run_id(table_id: str, row_name: str, digest: str) -> str:
    return "summary-" + hashlib.sha256(f"{table_id}\0{row_name}\0{digest}".encode()).hexdigest()[:16]


def log_row_summary(logger_cfg, table_id: str, row_name: str, group: str, summary: dict, save_dir: Path) -> str:
    """Log `summary` (a one-configuration sweep summary) as a W&B run; returns its id."""
    import wandb

    digest = summary["groups"][0]["config_hash"] or "unhashed"
    metrics = summary["metrics"]
    run = wandb.init(
        project=logger_cfg.project, entity=logger_cfg.entity, group=group, job_type="summary",
        name=f"{table_id}/{row_name}", id=summary_run_id(table_id, row_name, digest), resume="allow",
        tags=[*logger_cfg.tags, "summary"], dir=str(save_dir), reinit="create_new",
        config={"table": table_id, "row": row_name, "config_hash": digest, "task": summary["task"],
                "model": summary["model"], "seeds": summary["seeds"]},
    )
    for name, stats in metrics.items():
        for key in ("max", "mean", "std", "n"):
            run.summary[f"{name}/{key}"] = stats[key]
    names = sorted(metrics)
    per_seed = wandb.Table(columns=["run", "seed", *names])
    for run_name, seed in zip(summary["runs"], summary["seeds"]):
        per_seed.add_data(run_name, seed, *(metrics[n]["values"].get(run_name) for n in names))
    run.log({"seeds": per_seed})
    run.finish()
    wandb.teardown()  # waits until the run's records are written (offline: its .wandb file is complete)
    return run.id
