"""The exported bundle: `ensemble.json` plus each member's weights and config; validated, hashed, no pickles."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harmonia import __version__, tracking
from harmonia.config import FeatureConfig
from harmonia.ensembles.costs import cost_summary, run_costs
from harmonia.ensembles.library import download, member_source
from harmonia.ensembles.serving import model_signature
from harmonia.trainables.cross_validation import member_weight_files

BUNDLE_FORMAT = "harmonia.bundle/1"


class BundleError(ValueError):
    """A bundle that cannot be loaded: wrong format version, failed schema, or a tampered file."""


class BundleMember(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_id: str
    index: int = Field(ge=0, description="position in the ensemble's library (the fitted weights' order)")
    weight: float
    path: str
    sha256: dict[str, str]


class Bundle(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["harmonia.bundle/1"]
    name: str
    classes: list[str] = Field(min_length=1)
    method: str
    metric: str
    library_size: int = Field(gt=0)
    members: list[BundleMember] = Field(min_length=1)
    fitted: dict
    thresholds: list[float]
    sed: dict | None = None
    feature: dict  # the first member's; members may use other kinds: each one's own is in its config.json
    scores: dict[str, dict[str, float]]
    ensemble_run_id: str
    versions: dict[str, str]
    costs: dict | None = None  # each member's cost_* metrics and their total (ensembles/costs.py)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _versions() -> dict[str, str]:
    import mlflow
    import torch

    return {"harmonia": __version__, "torch": torch.__version__, "mlflow": mlflow.__version__,
            "python": platform.python_version()}


def check_export_dir(out: str | Path, force: bool) -> None:
    """Refuse an `out` that exists and is not an empty folder, unless `force` (then export replaces it)."""
    out = Path(out)
    if not out.exists() or force:
        return
    if not out.is_dir():
        raise BundleError(f"{out}: exists and is not a folder; choose another OUT, or pass --force to replace it")
    entries = sorted(p.name for p in out.iterdir())
    if entries:
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise BundleError(f"{out}: not empty ({shown}); export writes a fresh bundle folder: choose another OUT, "
                          "or pass --force to replace its contents")


def _ensemble_runs_hint(c, experiment_ids: list[str]) -> str:
    """Where to find ensemble runs: up to three ids here, and how to list them all."""
    flt = f"tags.`{tracking.KIND_TAG}` = 'ensemble'"
    runs = tracking.retry(lambda: c.search_runs(experiment_ids, filter_string=flt, max_results=3,
                                                order_by=["attributes.start_time DESC"])) if experiment_ids else []
    some = ", ".join(f"{r.info.run_id} ({r.info.run_name})" for r in runs) or "none yet (harmonia ensemble -e NAME)"
    return (f"ensemble runs: {some}; list them all in `mlflow ui` with the filter "
            f"tags.{tracking.KIND_TAG} = 'ensemble'")


def check_ensemble_run(uri: str, run_id: str) -> None:
    """One-line BundleError when `run_id` is not an ensemble run: unknown, a trial or a search run."""
    from mlflow.exceptions import MlflowException

    c = tracking.client(uri)
    try:
        run = c.get_run(run_id)
    except MlflowException:
        exps = [e.experiment_id for e in tracking.retry(lambda: c.search_experiments())]
        raise BundleError(f"--run {run_id}: no run with this id in {tracking.mask_uri(uri)}; "
                          f"{_ensemble_runs_hint(c, exps)}") from None
    kind = run.data.tags.get(tracking.KIND_TAG)
    if kind == "ensemble":
        return
    what = {"trial": "a trial run", "search": "a search run"}.get(kind, f"a run that harmonia did not make "
                                                                       f"(tag {tracking.KIND_TAG}={kind!r})")
    exp = c.get_experiment(run.info.experiment_id)
    raise BundleError(f"--run {run_id}: {what} of experiment {exp.name}, not an ensemble run; "
                      f"{_ensemble_runs_hint(c, [run.info.experiment_id])}")


def export_bundle(uri: str, ensemble_run_id: str, out: str | Path, name: str | None = None) -> Path:
    """Download the ensemble spec and its members' weights from MLflow into `out/`; returns the folder."""
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        spec = json.loads(download(uri, ensemble_run_id, "ensemble.json", tmp).read_text())
    if spec.get("format") != "harmonia.ensemble/1":
        raise BundleError(f"run {ensemble_run_id}: ensemble.json has format {spec.get('format')!r}, expected harmonia.ensemble/1")
    if out.exists():
        shutil.rmtree(out)
    (out / "members").mkdir(parents=True)
    members, feature = [], None
    for m in spec["members"]:
        rid = m["run_id"]  # a member key: a run id, or RUN_ID@EPOCH for an epoch snapshot
        dst = out / "members" / rid
        with tempfile.TemporaryDirectory() as tmp:
            run_id, prefix = member_source(rid)
            src = download(uri, run_id, f"{prefix}model", tmp)
            dst.mkdir(parents=True)
            # config.json + the weights: one file, or one per fold of a cross-validated trial (train.cv_folds)
            files = ["config.json", *member_weight_files(json.loads((src / "config.json").read_text()))]
            for f in files:
                (dst / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / f, dst / f)
        cfg = json.loads((dst / "config.json").read_text())
        try:  # the predictor computes each member's features from its own feature config (kinds may differ)
            FeatureConfig(**cfg["feature"])
        except (KeyError, TypeError, ValidationError) as err:
            raise BundleError(f"member {rid}: config.json has no usable feature config: {err}") from None
        if feature is None:
            feature = cfg["feature"]
        if cfg["classes"] != spec["classes"]:
            raise BundleError(f"member {rid}: classes differ from the ensemble's")
        members.append(BundleMember(run_id=rid, index=spec["library"].index(rid), weight=m["weight"],
                                    path=f"members/{rid}", sha256={f: sha256(dst / f) for f in files}))
    bundle = Bundle(format=BUNDLE_FORMAT, name=name or spec.get("method", "ensemble"), classes=spec["classes"],
                    method=spec["method"], metric=spec["metric"], library_size=len(spec["library"]),
                    members=members, fitted=spec["fitted"], thresholds=spec["thresholds"], sed=spec.get("sed"), feature=feature,
                    scores=spec["scores"], ensemble_run_id=ensemble_run_id, versions=_versions(),
                    costs=cost_summary(run_costs(uri, [m.run_id for m in members])))
    (out / "ensemble.json").write_text(bundle.model_dump_json(indent=2))
    return out


def read_bundle(path: str | Path) -> Bundle:
    """Validate `ensemble.json` against the schema and every member file against its hash."""
    path = Path(path)
    spec_file = path / "ensemble.json"
    if not spec_file.is_file():
        raise BundleError(f"{path}: not a harmonia bundle (no ensemble.json)")
    try:
        raw = json.loads(spec_file.read_text())
    except json.JSONDecodeError as err:
        raise BundleError(f"{spec_file}: not valid JSON: {err}") from None
    if isinstance(raw, dict) and raw.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{spec_file}: bundle format {raw.get('format')!r} is not supported "
                          f"(this harmonia reads {BUNDLE_FORMAT}); re-export it with `harmonia export`")
    try:
        bundle = Bundle.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        raise BundleError(f"{spec_file}: invalid bundle at {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    for m in bundle.members:
        check_member_files(path, spec_file, m)
    return bundle


def _inside(root: Path, target: Path) -> bool:
    return target == root or root in target.parents


def check_member_files(path: Path, spec_file: Path, m: BundleMember) -> None:
    """Every file the predictor reads for member `m` (config.json and the weights it names) is listed in
    its `sha256` map, lies inside the bundle and matches its hash; anything else is a BundleError."""
    root = path.resolve()
    mdir = (path / m.path).resolve()
    if not _inside(root, mdir) or mdir == root:
        raise BundleError(f"{spec_file}: member path {m.path!r} escapes the bundle")
    for f in m.sha256:
        if not _inside(mdir, (mdir / f).resolve()) or Path(f).is_absolute():
            raise BundleError(f"{spec_file}: member {m.run_id}: hashed file {f!r} resolves outside its folder "
                              f"{m.path}")

    def verified(f: str) -> Path:
        if f not in m.sha256:
            raise BundleError(f"{spec_file}: member {m.run_id}: {f} is read by the loader but not listed in its "
                              "sha256 map; re-export the bundle with `harmonia export`")
        target = mdir / f
        if not target.is_file():
            raise BundleError(f"{target}: missing member file")
        if sha256(target) != m.sha256[f]:
            raise BundleError(f"{target}: hash mismatch, the file was modified after export")
        return target

    try:
        cfg = json.loads(verified("config.json").read_text())
        needed = member_weight_files(cfg)
    except BundleError:
        raise
    except (AttributeError, TypeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise BundleError(f"{mdir / 'config.json'}: not a member config: {err}") from None
    for f in needed:
        verified(f)
    for f in sorted(set(m.sha256) - {"config.json", *needed}):
        verified(f)  # listed files the loader does not read must still be intact


def register_model(uri: str, bundle_dir: str | Path, ensemble_run_id: str, model_name: str) -> str:
    """Log the bundle as an MLflow pyfunc (models-from-code: no pickled code) and register it."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    bundle = read_bundle(bundle_dir)
    code = Path(__file__).with_name("pyfunc_model.py")
    with mlflow.start_run(run_id=ensemble_run_id), warnings.catch_warnings():
        # the input is audio (paths or bytes): no example file travels with the model
        warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(code), artifacts={"bundle": str(bundle_dir)},
            registered_model_name=model_name, pip_requirements=[f"harmonia=={__version__}"],
            signature=model_signature(bundle.classes),
        )
    c = tracking.client(uri)
    version = info.registered_model_version
    for split in ("valid", "test"):
        score = bundle.scores.get("ensemble", {}).get(split)
        if score is not None:
            c.set_model_version_tag(model_name, str(version), f"{split}_{bundle.metric}", f"{score:.6f}")
    c.set_model_version_tag(model_name, str(version), "harmonia.method", bundle.method)
    return f"models:/{model_name}/{version}"
