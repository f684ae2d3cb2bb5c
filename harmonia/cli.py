"""The `harmonia` command line: data, search, ensemble, export, predict, and the quickstart main job."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
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
QUICKSTART_CONFIG = Path("configs/quickstart.yaml")
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
               scenes: int = typer.Option(10, min=2, max=10, help="task scene: how many of the ten DCASE 2018 scenes"),
               shift: bool = typer.Option(False, "--shift", help="splits draw their sounds from disjoint source "
                                                                 "instances and backgrounds; writes a group per clip"),
               layout: Optional[str] = typer.Option(None, "--layout", help="write it as this dataset format: harmonia, "
                                                    "flat, desed, fsdkaggle2018, fsd50k, esc50, urbansound8k, "
                                                    "dcase2018_task1 (README: Dataset formats)")):
    """Generate a deterministic synthetic dataset in OUT: sound events (DCASE task 4) or scenes (2018 task 1),
    or with --layout in any registered dataset format."""
    from harmonia.config import TASKS
    from harmonia.data.synth import synthesize, synthesize_scenes

    if task not in TASKS:
        fail(f"--task: unknown {task!r}; valid: {', '.join(TASKS)}")
    if shift and task == "scene":
        fail("--shift: not available for task scene (its locations already split train from evaluate)")
    t = time.time()
    try:
        if layout is not None:
            from harmonia.data.layouts import SynthArgs, synthesize_layout

            synthesize_layout(out, layout, SynthArgs(clips, seconds, seed, sample_rate, True, scenes, shift=shift))
        elif task == "scene":
            synthesize_scenes(out, clips=clips, seconds=seconds, seed=seed, sample_rate=sample_rate, progress=True,
                              scenes=scenes)
        else:
            synthesize(out, clips=clips, seconds=seconds, seed=seed, sample_rate=sample_rate, progress=True,
                       shift=shift)
    except ValueError as err:
        fail(str(err))
    what = f"{layout} " if layout else "scene " if task == "scene" else ""
    console.print(f"wrote {clips} {what}clips to {out} in {time.time() - t:.1f} s")


@data_app.command("check")
def data_check(root: Path, sample_rate: Optional[int] = None,
               format: Optional[str] = typer.Option(None, "--format", help="read ROOT as this format (default: "
                                                    "detected; README: Dataset formats)")):
    """Validate audio and metadata; report every problem with file and line, then a summary."""
    from harmonia.data.data_check import check_dataset
    from harmonia.data.registry import ReadOptions

    report = check_dataset(root, options=ReadOptions(format=format, sample_rate=sample_rate))
    report.render(console)
    if any(p.severity == "error" for p in report.problems):
        raise typer.Exit(1)


@spaces_app.command("show")
def spaces_show(config: Optional[Path] = typer.Argument(None)):
    """Print the effective search space of CONFIG: each parameter's range or choices, for the architectures
    and augmentations a search of it can sample."""
    from harmonia.spaces import SpaceError, validate_overrides
    from harmonia.spaces.compose import describe_space

    cfg = _config(config)
    try:
        validate_overrides(cfg.space, cfg.task, cfg.features)
    except SpaceError as err:
        fail(str(err))
    t = Table(title=f"search space of task {cfg.task}")
    for col in ("part", "parameter", "values"):
        t.add_column(col)
    for part, name, values in describe_space(cfg.space, cfg.task, cfg.features):
        t.add_row(part, name, values)
    console.print(t)


@app.command()
def search(config: Path, address: Optional[str] = typer.Option(None, help="'auto', HOST:PORT or ray://HOST:PORT"),
           num_samples: Optional[int] = typer.Option(None, min=1), name: Optional[str] = None,
           resume: bool = typer.Option(False, help="restore the search NAME from its storage_path")):
    """Run a Ray Tune + Optuna search from CONFIG; every trial is an MLflow run."""
    from harmonia.ensembles.greedy import greedy_ensemble_score
    from harmonia.search.tuner import print_trials, run_search

    cfg = _apply(_config(config), address, num_samples, name)
    result = _guard(lambda: run_search(cfg, resume=resume, ensemble_score=greedy_ensemble_score))
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
    from harmonia.ensembles.selection import LibraryTooLarge
    from harmonia.search.cluster import ClusterError
    from harmonia.search.failures import SearchFailed
    from harmonia.spaces import SpaceError
    from harmonia.tracking import TrackingError

    try:
        return fn()
    except (ConfigError, SpaceError, DatasetError, AudioError, ClusterError, TrackingError, LibraryError,
            BundleError, LibraryTooLarge, FileNotFoundError) as err:
        fail(str(err))
    except SearchFailed as err:
        fail(str(err), code=1)


@app.command()
def ensemble(experiment: str = typer.Option(..., "--experiment", "-e"), size: int = typer.Option(20, min=1),
             metric: str = "mAP",
             method: str = typer.Option("all", help="a method, a comma-separated list, or 'all' to compare them"),
             top_k: int = typer.Option(5, min=1),
             folds: int = typer.Option(5, min=2, help="held-out folds of valid for the honest scores"),
             rule: str = typer.Option("anchored", help="recommendation: anchored (bagged selection unless another method "
                                                       "beats it fold by fold by more than the corrected s.e.), one_se "
                                                       "(simplest within one s.e. of the best honest score), paired_se, "
                                                       "or best"),
             grouping: str = typer.Option("auto", help="honest folds: source (hold out whole source groups), clip "
                                                       "(stratified clips), or auto (source unless most test clips "
                                                       "share a source with valid clips)"),
             snapshots: bool = typer.Option(True, help="also use the epoch snapshots trials kept (train.snapshots)"),
             pareto: bool = typer.Option(False, "--pareto", help="fit ensembles of increasing cost; print and log "
                                                                 "the honest score / cost front"),
             budget: Optional[str] = typer.Option(None, help="recommend the best honest ensemble costing at most "
                                                             "this per clip (CPU, batch 1): 20ms, 0.5s"),
             max_members: Optional[int] = typer.Option(None, min=1, help="recommend the best honest ensemble of at "
                                                                         "most N members"),
             shards: Optional[int] = typer.Option(None, min=1, help="greedy selections whose library does not fit "
                                                                    "in this process run on this many Ray workers, "
                                                                    "one class block each"),
             address: Optional[str] = typer.Option(None, help="with --shards: the Ray cluster, as harmonia search "
                                                              "--address ('auto', HOST:PORT or ray://HOST:PORT; "
                                                              "default a local Ray)"),
             config: Optional[Path] = typer.Option(None, help="take the tracking URI from this config"),
             tracking_uri: Optional[str] = UriOption):
    """Ensembles fitted on valid from the finished trials of EXPERIMENT, each scored honestly on held-out
    folds of valid; one MLflow run per method and a recommendation for export (within --budget /
    --max-members when given)."""
    if address is not None and shards is None:
        fail("--address: needs --shards W (the number of Ray workers holding the library's class blocks)")
    from contextlib import nullcontext

    from harmonia.ensembles.selection import sharding

    with sharding(shards, address) if shards is not None else nullcontext():
        _ensemble(experiment, size, metric, method, top_k, folds, rule, grouping, snapshots, pareto, budget,
                  max_members, config, tracking_uri)


def _ensemble(experiment: str, size: int, metric: str, method: str, top_k: int, folds: int, rule: str,
              grouping: str, snapshots: bool, pareto: bool, budget: Optional[str], max_members: Optional[int],
              config: Optional[Path], tracking_uri: Optional[str]) -> None:
    from harmonia.ensembles.honest import GROUPINGS, RULES
    from harmonia.ensembles.methods import METHODS
    from harmonia.ensembles.stage import build_ensembles
    from harmonia.ensembles.tables import print_comparison, print_methods
    from harmonia.metrics import METRICS

    uri = _uri(tracking_uri, config)
    methods = sorted(METHODS) if method == "all" else [m.strip() for m in method.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        fail(f"--method: unknown {', '.join(unknown)}; valid: all, {', '.join(sorted(METHODS))}")
    if rule not in RULES:
        fail(f"--rule: unknown {rule!r}; valid: {', '.join(RULES)}")
    if grouping not in GROUPINGS:
        fail(f"--grouping: unknown {grouping!r}; valid: {', '.join(GROUPINGS)}")
    clip_metrics = sorted(m for m, spec in METRICS.items() if spec.inputs == "scores")
    from harmonia.ensembles.sed_selection import SED_SELECTION_METRICS

    if metric in SED_SELECTION_METRICS:  # greedy selection on the frame outputs (ensembles/sed_stage.py)
        from harmonia.ensembles.sed_stage import build_sed_selection
        from harmonia.ensembles.tables import print_sed_selection

        print_sed_selection(experiment, _guard(lambda: build_sed_selection(
            _uri(tracking_uri, config), experiment, metric=metric, size=size, folds=folds, snapshots=snapshots,
            grouping=grouping)))
        return
    if metric not in clip_metrics:
        fail(f"--metric: unknown {metric!r} for ensembles of clip scores; valid: {', '.join(clip_metrics)}; "
             f"for SED experiments, by frame outputs: {', '.join(SED_SELECTION_METRICS)}")
    budget_ms = _budget_ms(budget)
    reports, table = _guard(lambda: build_ensembles(uri, experiment, methods=methods, size=size, metric=metric,
                                                    top_k=top_k, snapshots=snapshots, folds=folds, rule=rule,
                                                    grouping=grouping,
                                                    skip_unavailable=method == "all"))
    budgeted = None
    if pareto or budget is not None or max_members is not None:  # ensembles/budget.py
        from harmonia.ensembles.budget import apply_budget

        budgeted = _guard(lambda: apply_budget(uri, experiment, reports, table, metric=metric, size=size, top_k=top_k,
                                               pareto=pareto, budget_ms=budget_ms, max_members=max_members))
        table = budgeted.table
    if len(methods) == 1:  # the one method asked for, beside the best single model and the top-k average
        print_comparison(next(r for r in reports if r.method == methods[0]))
    within = budget is not None or max_members is not None
    print_methods(experiment, metric, reports, table, rule,
                  why="the best honest score among the ensembles within the budget" if within else None)
    if budgeted is not None:
        from harmonia.ensembles.budget import print_budget

        print_budget(experiment, metric, budgeted, budget_ms, max_members)


def _budget_ms(budget: Optional[str]) -> float:
    """--budget as ms per clip (inf when absent); one clear line for a malformed value."""
    import math

    from harmonia.ensembles.costs import parse_budget

    try:
        return math.inf if budget is None else parse_budget(budget)
    except ValueError as err:
        fail(str(err))


@app.command()
def export(out: Path, run: str = typer.Option(..., "--run", help="the ensemble run id"),
           model_name: Optional[str] = typer.Option(None, help="registered model name (default harmonia-<experiment>)"),
           force: bool = typer.Option(False, "--force", help="replace the contents of a non-empty OUT"),
           config: Optional[Path] = typer.Option(None), tracking_uri: Optional[str] = UriOption):
    """Write the bundle for ensemble run RUN to OUT and register it as an MLflow model."""
    from harmonia.ensembles.bundle import check_ensemble_run, check_export_dir, export_bundle, register_model

    uri = _uri(tracking_uri, config)
    _guard(lambda: check_export_dir(out, force))
    _guard(lambda: check_ensemble_run(uri, run))
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
    """Score WAV FILES with an exported BUNDLE; write filename, per-class scores and tags as TSV.

    A file that cannot be read is reported with its reason and left out; the others are written; exit 1."""
    from harmonia.ensembles.predictor import EnsemblePredictor

    predictor = _guard(lambda: EnsemblePredictor.load(bundle))
    df, bad = _guard(lambda: predictor.predict_readable(files))
    df.to_csv(output, sep="\t", index=False, float_format="%.6f")
    console.print(f"wrote {len(df)} rows to {output}")
    if events is not None:
        good = [f for f in files if str(f) not in bad]
        try:
            ev = _guard(lambda: predictor.predict_events(good))
        except ValueError as err:
            fail(str(err))
        ev.to_csv(events, sep="\t", index=False)
        console.print(f"wrote {len(ev)} events to {events}")
    if bad:
        for f, reason in bad.items():
            console.print(f"[bold red]skipped:[/] {escape(f)}: {escape(reason)}", highlight=False)
        console.print(f"{len(bad)} of {len(files)} files could not be read; their rows are missing from {output}")
        raise typer.Exit(1)


@app.command()
def quickstart(config: Optional[Path] = typer.Argument(None, help=f"a config file (default: {QUICKSTART_CONFIG} "
                                                                  "when present, else the built-in defaults)"),
               num_samples: Optional[int] = typer.Option(None, min=1)):
    """The main job: dataset → search → ensemble → export → predict, then a summary."""
    from harmonia.quickstart import run_quickstart

    cfg = _apply(_config(quickstart_config(config)), None, num_samples, None)
    _guard(lambda: run_quickstart(cfg))


def quickstart_config(path: Optional[Path]) -> Optional[Path]:
    """The config `harmonia quickstart` runs: PATH as given (load_config refuses a missing one); without
    it the packaged `configs/quickstart.yaml` when present here, else None (the built-in defaults)."""
    if path is not None:
        return path
    return QUICKSTART_CONFIG if QUICKSTART_CONFIG.is_file() else None


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
