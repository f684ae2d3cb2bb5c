"""The `harmonia` command line: data, search, ensemble, export, predict, and the quickstart main job."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from harmonia.config import ConfigError, HarmoniaConfig, load_config, resolve_tracking_uri
from harmonia.progress import console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Search audio tagging / SED models on Ray, track them in MLflow, export ensembles.")
data_app = typer.Typer(no_args_is_help=True, help="Generate and validate datasets.")
spaces_app = typer.Typer(no_args_is_help=True, help="Inspect search spaces.")
app.add_typer(data_app, name="data")
app.add_typer(spaces_app, name="spaces")

DEFAULT_URI = "sqlite:///mlruns.db"
UriOption = typer.Option(None, "--tracking-uri", envvar="HARMONIA_TRACKING_URI",
                         help=f"MLflow tracking URI (default: the config's, else {DEFAULT_URI} in this folder)")


def fail(msg: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code)


def _config(path: Optional[Path]) -> HarmoniaConfig:
    try:
        cfg = load_config(path) if path else HarmoniaConfig()
    except ConfigError as err:
        fail(str(err))
    return cfg.resolved()


def _uri(uri: Optional[str], config: Optional[Path]) -> str:
    if uri:
        return resolve_tracking_uri(uri, Path.cwd())
    return _config(config).tracking.uri


@data_app.command("synth")
def data_synth(out: Path, clips: int = typer.Option(600, min=3), seconds: float = typer.Option(4.0, min=0.5),
               seed: int = 0, sample_rate: int = 16000,
               task: str = typer.Option("tagging", help="tagging, sed, sequence: DCASE task-4 events with strong "
                                                         "labels; scene: DCASE 2018 task 1 layout (meta.csv, folds)"),
               scenes: int = typer.Option(10, min=2, max=10, help="task scene: how many of the ten DCASE 2018 scenes")):
    """Generate a deterministic synthetic dataset in OUT: sound events (DCASE task 4) or scenes (2018 task 1)."""
    from harmonia.config import TASKS
    from harmonia.data.synth import synthesize, synthesize_scenes

    if task not in TASKS:
        fail(f"--task: unknown {task!r}; valid: {', '.join(TASKS)}")
    t = time.time()
    try:
        if task == "scene":
            synthesize_scenes(out, clips=clips, seconds=seconds, seed=seed, sample_rate=sample_rate, progress=True,
                              scenes=scenes)
        else:
            synthesize(out, clips=clips, seconds=seconds, seed=seed, sample_rate=sample_rate, progress=True)
    except ValueError as err:
        fail(str(err))
    console.print(f"wrote {clips} {'scene ' if task == 'scene' else ''}clips to {out} in {time.time() - t:.1f} s")


@data_app.command("check")
def data_check(root: Path, sample_rate: Optional[int] = None):
    """Validate audio and metadata; report every problem with file and line, then a summary."""
    from harmonia.data.data_check import check_dataset

    report = check_dataset(root, sample_rate=sample_rate)
    report.render(console)
    if any(p.severity == "error" for p in report.problems):
        raise typer.Exit(1)


@spaces_app.command("show")
def spaces_show(config: Optional[Path] = typer.Argument(None)):
    """Print the effective search space of CONFIG, with its conditions."""
    from harmonia.spaces import SpaceError, parameter_names, validate_overrides

    cfg = _config(config)
    try:
        validate_overrides(cfg.space, cfg.task, cfg.features)
    except SpaceError as err:
        fail(str(err))
    # what a parameter is when `space:` leaves it out, where that is not its part's default range
    unset = {"features.kind": f"{cfg.features.kind} (features.kind)",
             "aug.waveform_copies": "default" if cfg.features.augmented_copies.n_copies
             else "off (features.augmented_copies is empty)"}
    t = Table(title="search space")
    for col in ("part", "parameter", "override"):
        t.add_column(col)
    for part, names in parameter_names().items():
        for n in names:
            cond = f"if aug.{part.split()[-1]}" if part.startswith("augmentation") and n != f"aug.{part.split()[-1]}" \
                else (f"if arch={part.split()[-1]}" if part.startswith("architecture") else "")
            t.add_row(f"{part} {cond}".strip(), n, str(cfg.space.get(n, unset.get(n, "default"))))
    console.print(t)


@app.command()
def search(config: Path, address: Optional[str] = typer.Option(None, help="'auto', HOST:PORT or ray://HOST:PORT"),
           num_samples: Optional[int] = typer.Option(None, min=1), name: Optional[str] = None,
           resume: bool = typer.Option(False, help="restore the search NAME from its storage_path")):
    """Run a Ray Tune + Optuna search from CONFIG; every trial is an MLflow run."""
    from harmonia.search.tuner import print_trials, run_search

    cfg = _apply(_config(config), address, num_samples, name)
    result = _guard(lambda: run_search(cfg, resume=resume))
    print_trials(result.trials, cfg.search.metric)
    console.print(f"experiment [bold]{cfg.name}[/] · search run {result.search_run_id}")


def _apply(cfg: HarmoniaConfig, address, num_samples, name) -> HarmoniaConfig:
    if address:
        cfg.search.address = address
    if num_samples:
        cfg.search.num_samples = num_samples
    if name:
        cfg.name = name
    return cfg


def _guard(fn):
    """Run a stage; known input errors print one clear line instead of a traceback."""
    from harmonia.data.audio import AudioError
    from harmonia.data.datasets import DatasetError
    from harmonia.ensembles.bundle import BundleError
    from harmonia.ensembles.library import LibraryError
    from harmonia.search.cluster import ClusterError
    from harmonia.spaces import SpaceError
    from harmonia.tracking import TrackingError

    try:
        return fn()
    except (ConfigError, SpaceError, DatasetError, AudioError, ClusterError, TrackingError, LibraryError,
            BundleError, FileNotFoundError) as err:
        fail(str(err))


@app.command()
def ensemble(experiment: str = typer.Option(..., "--experiment", "-e"), size: int = typer.Option(20, min=1),
             metric: str = "mAP",
             method: str = typer.Option("all", help="a method, a comma-separated list, or 'all' to compare them"),
             top_k: int = typer.Option(5, min=1),
             snapshots: bool = typer.Option(True, help="also use the epoch snapshots trials kept (train.snapshots)"),
             config: Optional[Path] = typer.Option(None, help="take the tracking URI from this config"),
             tracking_uri: Optional[str] = UriOption):
    """Ensembles fitted on valid from the finished trials of EXPERIMENT; one MLflow run per method."""
    from harmonia.ensembles.methods import METHODS
    from harmonia.ensembles.stage import build_ensembles
    from harmonia.metrics import METRICS, get_metric

    uri = _uri(tracking_uri, config)
    methods = sorted(METHODS) if method == "all" else [m.strip() for m in method.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        fail(f"--method: unknown {', '.join(unknown)}; valid: all, {', '.join(sorted(METHODS))}")
    clip_metrics = sorted(m for m, spec in METRICS.items() if spec.inputs == "scores")
    if metric not in clip_metrics:
        fail(f"--metric: unknown {metric!r} for ensembles of clip scores; valid: {', '.join(clip_metrics)}")
    reports, table = _guard(lambda: build_ensembles(uri, experiment, methods=methods, size=size, metric=metric,
                                                    top_k=top_k, snapshots=snapshots,
                                                    skip_unavailable=method == "all"))
    if len(reports) == 1:
        print_comparison(reports[0])
        return
    t = Table(title=f"ensemble methods on {experiment} ({metric}; weights fitted on valid, test only reported)")
    for col in ("method", "valid", "test", "members", "ensemble run"):
        t.add_column(col)
    fitted = table.loc[table["run_id"] != "", "valid"]
    best = fitted.idxmax() if get_metric(metric).greater_is_better else fitted.idxmin()
    for i, r in table.iterrows():
        style = "bold green" if i == best else None
        t.add_row(r["method"], f"{r['valid']:.4f}", f"{r['test']:.4f}", str(r["members"]), r["run_id"], style=style)
    console.print(t)
    console.print(f"export the best on valid: harmonia export out/{experiment} --run {table.loc[best, 'run_id']}")


def print_comparison(report) -> None:
    scores = [c for c in ("oof", "valid", "test") if c in report.comparison.columns]  # oof: cv_selection
    on = "out-of-fold predictions of train ∪ valid" if "oof" in scores else "valid"
    t = Table(title=f"{report.method} ensemble vs single models ({report.metric}; fitted on {on})")
    for col in ("model", *scores, "members"):
        t.add_column(col)
    for model, row in report.comparison.iterrows():
        t.add_row(model, *(f"{row[c]:.4f}" for c in scores), str(int(row["members"])))
    console.print(t)
    names = dict(zip(report.library.run_ids, report.library.run_names))
    console.print("members: " + ", ".join(f"{names[r]}×{w:.2f}" for r, w in report.members))
    console.print(f"ensemble run: [bold]{report.run_id}[/]")


@app.command()
def export(out: Path, run: str = typer.Option(..., "--run", help="the ensemble run id"),
           model_name: Optional[str] = typer.Option(None, help="registered model name (default harmonia-<experiment>)"),
           config: Optional[Path] = typer.Option(None), tracking_uri: Optional[str] = UriOption):
    """Write the bundle for ensemble run RUN to OUT and register it as an MLflow model."""
    from harmonia.ensembles.bundle import export_bundle, register_model

    uri = _uri(tracking_uri, config)
    name = model_name or _default_model_name(uri, run)
    _guard(lambda: export_bundle(uri, run, out, name=name))
    ref = _guard(lambda: register_model(uri, out, run, name))
    console.print(f"bundle: {out.resolve()}\nregistered model: {ref}")


def _default_model_name(uri: str, run_id: str) -> str:
    from harmonia import tracking

    c = tracking.client(uri)
    exp = c.get_experiment(c.get_run(run_id).info.experiment_id)
    return f"harmonia-{exp.name}"


@app.command()
def predict(bundle: Path, files: list[Path], output: Path = typer.Option(Path("tags.tsv"), "-o", "--output"),
            events: Optional[Path] = typer.Option(None, help="also write DCASE events (SED bundles) to this TSV")):
    """Score WAV FILES with an exported BUNDLE; write filename, per-class scores and tags as TSV."""
    from harmonia.ensembles.predictor import EnsemblePredictor

    predictor = _guard(lambda: EnsemblePredictor.load(bundle))
    df = _guard(lambda: predictor.predict_files(files))
    df.to_csv(output, sep="\t", index=False, float_format="%.6f")
    console.print(f"wrote {len(df)} rows to {output}")
    if events is not None:
        try:
            ev = _guard(lambda: predictor.predict_events(files))
        except ValueError as err:
            fail(str(err))
        ev.to_csv(events, sep="\t", index=False)
        console.print(f"wrote {len(ev)} events to {events}")


@app.command()
def quickstart(config: Path = typer.Argument(Path("configs/quickstart.yaml")),
               num_samples: Optional[int] = typer.Option(None, min=1)):
    """The main job: dataset → search → ensemble → export → predict, then a summary."""
    from harmonia.quickstart import run_quickstart

    cfg = _apply(_config(config if config.is_file() else None), None, num_samples, None)
    _guard(lambda: run_quickstart(cfg))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
