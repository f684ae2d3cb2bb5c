"""The main job on the embedded default: search, ensemble, export, predict, summary."""

from __future__ import annotations

import time
from pathlib import Path

from rich.markup import escape
from rich.panel import Panel

from harmonia.config import HarmoniaConfig
from harmonia.progress import console


def run_quickstart(cfg: HarmoniaConfig, out: Path | None = None) -> dict:
    from harmonia.cli import print_comparison
    from harmonia.ensembles.bundle import export_bundle, register_model
    from harmonia.ensembles.predictor import EnsemblePredictor
    from harmonia.search.tuner import print_trials, run_search
    from harmonia.data.datasets import load_dataset
    from harmonia.ensembles.stage import build_ensemble

    t0 = time.time()
    result = run_search(cfg)
    print_trials(result.trials, cfg.search.metric, top=5)
    report = build_ensemble(cfg.tracking.uri, cfg.name, size=cfg.ensemble.size, metric=cfg.ensemble.metric,
                            top_k=cfg.ensemble.top_k_average)
    print_comparison(report)
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
    uri = cfg.tracking.uri
    ui = f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else f"open {uri}"
    ens = report.comparison
    console.print(Panel.fit(
        f"[bold]{cfg.name}[/] finished in {time.time() - t0:.0f} s\n"
        f"ensemble  valid {ens.loc['ensemble', 'valid']:.4f}  test {ens.loc['ensemble', 'test']:.4f}\n"
        f"best single valid {ens.iloc[1]['valid']:.4f}  test {ens.iloc[1]['test']:.4f}\n"
        f"bundle: {out}\nregistered model: {model_ref}\npredictions: {tags_file}\n"
        f"browse the runs:  {ui}",
        title="harmonia quickstart"))
    return {"search": result, "ensemble": report, "bundle": out, "model": model_ref, "predictions": preds}
