"""The main job on the embedded default: search, ensemble, export, predict, summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.panel import Panel

from harmonia.config import HarmoniaConfig
from harmonia.progress import console

if TYPE_CHECKING:
    import pandas as pd


def run_quickstart(cfg: HarmoniaConfig, out: Path | None = None) -> dict:
    from harmonia.ensembles.tables import print_methods
    from harmonia.ensembles.bundle import export_bundle, register_model
    from harmonia.ensembles.predictor import EnsemblePredictor
    from harmonia.search.tuner import print_trials, run_search
    from harmonia.data.datasets import load_dataset
    from harmonia.ensembles.greedy import greedy_ensemble_score
    from harmonia.ensembles.stage import build_ensembles, recommended

    from harmonia.config import ConfigError
    from harmonia.ensembles.methods import METHODS

    unknown = [m for m in cfg.ensemble.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"ensemble.methods: unknown {', '.join(unknown)}; valid: {', '.join(sorted(METHODS))}")
    t0 = time.time()
    result = run_search(cfg, ensemble_score=greedy_ensemble_score)
    print_trials(result.trials, cfg.search.metric, top=5)
    e = cfg.ensemble
    reports, table = build_ensembles(cfg.tracking.uri, cfg.name, methods=e.methods, size=e.size, metric=e.metric,
                                     top_k=e.top_k_average, folds=e.folds, rule=e.rule,
                                     grouping=e.grouping)
    print_methods(cfg.name, e.metric, reports, table, e.rule)
    report = recommended(reports, table)
    out = Path(out or Path("out") / cfg.name).resolve()
    export_bundle(cfg.tracking.uri, report.run_id, out, name=cfg.name)
    model_ref = register_model(cfg.tracking.uri, out, report.run_id, f"harmonia-{cfg.name}")
    test = load_dataset(cfg.data.root).split("test").head(5)
    preds = EnsemblePredictor.load(out).predict_files(list(test["path"]))
    tags_file = out / "quickstart_tags.tsv"
    preds.to_csv(tags_file, sep="\t", index=False, float_format="%.4f")
    truth = dict(zip(test["path"], test["tags"]))
    for _, row in preds.iterrows():
        console.print(escape(f"{Path(row['filename']).name}: predicted [{row['event_labels']}]  "
                             f"true [{','.join(truth[row['filename']])}]"))
    print_summary(cfg.name, time.time() - t0, report.method, e.metric, report.comparison, out, model_ref, tags_file,
                  cfg.tracking.uri)
    return {"search": result, "ensemble": report, "bundle": out, "model": model_ref, "predictions": preds}


def print_summary(name: str, seconds: float, method: str, metric: str, ens: "pd.DataFrame", out: Path, model_ref: str,
                  tags_file: Path, uri: str) -> None:
    """The scores in a panel; below it, paths and the command to browse the runs, each whole on its own line
    (a terminal wraps them softly, so they paste as one)."""
    ui = f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else f"open {uri}"
    console.print(Panel.fit(
        f"[bold]{escape(name)}[/] finished in {seconds:.0f} s\n"
        f"exported: {method} (recommended; {metric}, honest = held-out folds of valid)\n"
        f"  honest valid {ens.loc['ensemble', 'honest']:.4f} ± {ens.loc['ensemble', 'honest_se']:.4f}  "
        f"in-sample valid {ens.loc['ensemble', 'valid']:.4f}  test {ens.loc['ensemble', 'test']:.4f}\n"
        f"best single: honest valid {ens.iloc[1]['honest']:.4f}  in-sample valid {ens.iloc[1]['valid']:.4f}  "
        f"test {ens.iloc[1]['test']:.4f}",
        title="harmonia quickstart"))
    for label, value in (("bundle:", out), ("registered model:", model_ref), ("predictions:", tags_file),
                         ("browse the runs:", ui)):
        console.print(label)
        console.print(f"  {escape(str(value))}", soft_wrap=True, highlight=False)
