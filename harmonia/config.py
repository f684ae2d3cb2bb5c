"""Typed configuration of a harmonia run, loaded from YAML with errors that name the key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message names the file and key."""


Task = Literal["tagging", "sed", "sequence", "scene"]
TASKS: tuple[str, ...] = get_args(Task)
"""tagging: multi-label clip tags (BCE); sed: tags + frame activity from strong labels; sequence: the
ordered tags of a clip (CTC, crnn_ctc_sequential_labels.txt §1.4); scene: one label per clip (softmax,
cross-entropy; DCASE 2018 task 1)."""

SearchMetric = Literal["mAP", "auc", "f1", "accuracy", "log_loss", "seq_acc", "event_f1", "event_f1_macro",
                       "segment_f1", "segment_er", "psds1", "psds2"]
SED_EVENT_METRICS: tuple[str, ...] = ("event_f1", "event_f1_macro", "segment_f1", "segment_er", "psds1", "psds2")
"""Scored per epoch from frame outputs and strong labels (trainables/tasks.py `sed_scores`), not from clip scores."""
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "tagging": ("mAP", "auc", "f1"),
    "sed": ("mAP", "auc", "f1", *SED_EVENT_METRICS),
    "sequence": ("seq_acc", "mAP", "auc", "f1"),
    "scene": ("accuracy", "log_loss", "mAP", "auc"),
}
"""The valid metrics each task's trials report per epoch (`valid_<name>`): what `search.metric` may be.
The ensemble stage scores clip outputs, so `ensemble.metric` may be any of them but `seq_acc`."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class SynthConfig(_Strict):
    """How `harmonia data synth` builds the default dataset when it is absent.

    It is generated on the spot only at `root` (the default location): a `data.root` elsewhere that holds
    no dataset is an error, so that a mistyped path never gets a dataset of its own.
    """

    root: str = "data/synth"
    clips: int = Field(600, gt=0)
    seconds: float = Field(4.0, gt=0)
    seed: int = 0
    sample_rate: int = Field(16000, gt=0)
    scenes: int = Field(10, ge=2, le=10)  # task scene: how many of the ten DCASE 2018 scenes


SplitName = Literal["train", "valid", "test", "unlabeled"]


class SplitSourceConfig(_Strict):
    """One metadata file of a split and the audio folder its filenames are relative to (paths under root)."""

    metadata: str
    audio: str
    durations: str | None = None


class DataConfig(_Strict):
    """Where the dataset is and how to read it (formats: `harmonia.data.formats`; README "Dataset formats")."""

    root: str = "data/synth"
    format: str | None = None  # None: detected from the folder (an error names the candidates when ambiguous)
    # harmonia, flat, desed: the metadata files (and audio folders) that make a split, replacing the found ones
    splits: dict[SplitName, list[SplitSourceConfig]] = Field(default_factory=dict)
    # desed: subset glob -> split (e.g. "validation/synthetic*": none); fsdkaggle2018: usage -> split;
    # fsd50k: dev split (train, val) -> split. `none` leaves them out.
    subsets: dict[str, SplitName | Literal["none"]] = Field(default_factory=dict)
    test_fold: int | None = Field(None, ge=0)  # esc50 (default 5), urbansound8k (default 10)
    valid_fold: int | None = Field(None, ge=0)  # esc50 (default 4), urbansound8k (default 9)
    clip_seconds: float | None = Field(None, gt=0)  # clips shorter than half of it are warned about (default: median)
    synth: SynthConfig | None = Field(default_factory=SynthConfig)


class AugmentedCopiesConfig(_Strict):
    """Waveform augmentations precomputed once per train clip into the feature cache.

    Each value is one copy: `[-2, -1, 1, 2]` semitones and `[0.9, 0.95, 1.05, 1.1]` rates are the
    eight copies per file that dcase2018_workshop_proceedings.txt L4558–4561 generated "before
    training as the required processing time is long". A rate r > 1 speeds up (duration / r).
    """

    pitch_shift_semitones: list[float] = Field(default_factory=list)
    time_stretch_rates: list[float] = Field(default_factory=list)

    @field_validator("pitch_shift_semitones")
    @classmethod
    def _semitones_ok(cls, v: list[float]) -> list[float]:
        if any(s == 0 for s in v):
            raise ValueError("a pitch shift of 0 semitones is the original clip")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate semitones in {v}")
        return v

    @field_validator("time_stretch_rates")
    @classmethod
    def _rates_ok(cls, v: list[float]) -> list[float]:
        if any(not r > 0 or r == 1 for r in v):
            raise ValueError(f"time stretch rates must be > 0 and != 1, got {v}")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate rates in {v}")
        return v

    @property
    def n_copies(self) -> int:
        return len(self.pitch_shift_semitones) + len(self.time_stretch_rates)


FEATURE_KIND_FIELDS: dict[str, tuple[str, ...]] = {"logmel": (), "mfcc": ("n_mfcc",), "nnf_logmel": ("nnf_k",)}
"""Fields that only one feature kind reads; the cache key of the other kinds leaves them out."""

FEATURE_WIDTH_FIELD: dict[str, str] = {"logmel": "n_mels", "mfcc": "n_mfcc", "nnf_logmel": "n_mels"}
"""The field that gives each kind's number of features per frame (the models' input width)."""

FEATURE_KIND_PARAM = "features.kind"
"""The trial param (and `space:` key) naming the feature kind a trial trains on (spaces/features.py)."""


class FeatureConfig(_Strict):
    """Front end (log-mel, MFCC or nearest-neighbour-filtered log-mel); its hash keys the feature cache.

    The computation of each kind is registered in `harmonia.features.FEATURE_KINDS`.
    """

    kind: Literal["logmel", "mfcc", "nnf_logmel"] = "logmel"
    sample_rate: int = Field(16000, gt=0)
    n_fft: int = Field(1024, gt=0)
    hop_length: int = Field(320, gt=0)
    n_mels: int = Field(64, gt=0)
    fmin: float = Field(0.0, ge=0)
    fmax: float | None = None
    n_mfcc: int = Field(20, gt=0)
    nnf_k: int = Field(8, gt=0)
    augmented_copies: AugmentedCopiesConfig = Field(default_factory=AugmentedCopiesConfig)
    cache_dir: str = ".harmonia_cache"
    # Above this many MB of features (all kinds a search builds, augmented copies included) trials
    # memory-map consolidated per-split files under cache_dir instead of sharing one in-memory
    # FeatureSet through Ray's object store (harmonia/feature_store.py); on a cluster cache_dir must
    # then be storage that every node mounts at the same path.
    memory_budget_mb: float = Field(2048.0, ge=0)

    def identity(self) -> dict[str, Any]:
        """The fields that change this kind's features of one waveform (what `key()` hashes).

        Leaves out the cache location and memory budget, the augmented copies (each copy is cached under its own
        name next to the original) and the fields of other kinds, so that adding a kind or a copy
        keeps every existing cache entry valid.
        """
        unused = {f for kind, fs in FEATURE_KIND_FIELDS.items() if kind != self.kind for f in fs}
        return self.model_dump(exclude={"cache_dir", "memory_budget_mb", "augmented_copies", *unused})

    def key(self) -> str:
        """Stable hash of every field that changes the computed features."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def n_features(self) -> int:
        """Features per frame: n_mels, or n_mfcc for MFCC."""
        return int(getattr(self, FEATURE_WIDTH_FIELD[self.kind]))

    @property
    def hop_seconds(self) -> float:
        return self.hop_length / self.sample_rate


class TrackingConfig(_Strict):
    uri: str = "sqlite:///mlruns.db"
    artifacts: str = "mlartifacts"


class ResourcesConfig(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class SearchConfig(_Strict):
    num_samples: int = Field(8, gt=0)
    max_concurrent: int = Field(1, gt=0)
    max_epochs: int = Field(12, gt=0)
    grace_period: int = Field(3, gt=0)
    reduction_factor: int = Field(2, gt=1)
    metric: SearchMetric = "mAP"
    seed: int = 0
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    storage_path: str = "ray_results"
    max_failures: int = Field(3, ge=0)  # a dead node can cost a trial more than one attempt
    address: str | None = None
    # "ensemble": ASHA and Optuna rank trials by the score of the greedy ensemble they would join (its
    # marginal gain over the current library's ensemble; search/library_service.py); "single": their own score.
    objective: Literal["single", "ensemble"] = "single"


class TrainConfig(_Strict):
    """Fixed training settings that the search space does not vary."""

    patience: int = Field(4, gt=0)
    seed: int = 0
    num_threads: int = Field(1, gt=0)
    # Keep each trial's k best epochs (the best one included) as ensemble members: the k - 1 besides
    # the best are logged under snapshots/ with their weights and predictions.
    snapshots: int = Field(0, ge=0)
    # k >= 2: each trial trains k fold models on train ∪ valid and logs out-of-fold predictions
    # (trainables/cross_validation.py); 0 or 1: one model trained on train, early-stopped on valid;
    # "predefined": one fold per predefined fold of train ∪ valid (the dataset's `fold` column: ESC-50, UrbanSound8K).
    cv_folds: Annotated[int, Field(ge=0)] | Literal["predefined"] = 0

    @property
    def cross_validated(self) -> bool:
        """True when trials train fold models (k >= 2 folds, or the dataset's predefined folds)."""
        return self.cv_folds == "predefined" or self.cv_folds >= 2


class EnsembleConfig(_Strict):
    """The ensemble stage of the quickstart: the candidate methods (the best single model and the plain
    average are always candidates), their honest folds and the recommendation rule."""

    size: int = Field(20, gt=0)
    top_k_average: int = Field(5, gt=0)
    metric: Literal["mAP", "auc", "f1", "accuracy", "log_loss"] = "mAP"
    methods: list[str] = Field(default_factory=lambda: ["average", "bagged_selection", "weighted",
                                                        "per_class_selection", "stacking"])
    folds: int = Field(5, ge=2)
    rule: Literal["anchored", "one_se", "paired_se", "best"] = "anchored"
    grouping: Literal["auto", "source", "clip"] = "auto"


class HarmoniaConfig(_Strict):
    """A whole run: data, features, tracking, search, training, ensemble and the space overrides."""

    name: str = "quickstart"
    task: Task = "tagging"
    data: DataConfig = Field(default_factory=DataConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)
    space: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\ "):
            raise ValueError("name must be non-empty without slashes or spaces")
        return v

    @model_validator(mode="after")
    def _metrics_fit_task(self) -> "HarmoniaConfig":
        valid = TASK_METRICS[self.task]
        for key, metric in (("search.metric", self.search.metric), ("ensemble.metric", self.ensemble.metric)):
            if metric not in valid:
                clip_only = key == "ensemble.metric"
                raise ValueError(f"{key}: {metric!r} is not a metric of task {self.task!r} (valid: "
                                 f"{', '.join(m for m in valid if not clip_only or m not in ('seq_acc', *SED_EVENT_METRICS))})")
        return self

    @model_validator(mode="after")
    def _cv_without_snapshots(self) -> "HarmoniaConfig":
        if self.train.cross_validated and self.train.snapshots > 0:
            raise ValueError(f"train.cv_folds={self.train.cv_folds} with train.snapshots={self.train.snapshots}: "
                             "epoch snapshots are not supported in cross-validated trials (each fold model stops "
                             "at its own epoch); set train.snapshots: 0 or train.cv_folds: 0")
        if self.train.cv_folds != "predefined" and self.train.cross_validated and self.task == "scene":
            raise ValueError(f"train.cv_folds={self.train.cv_folds} with task 'scene': the folds are split by "
                             "label set, not by recording location, so clips of one location would be on both "
                             "sides of a fold (the scene valid split holds out whole locations); set train.cv_folds: 0")
        return self

    def resolved(self, base: Path | None = None) -> "HarmoniaConfig":
        """A copy with relative paths and the SQLite URI made absolute against `base` (cwd)."""
        base = (base or Path.cwd()).resolve()
        c = self.model_copy(deep=True)
        c.data.root = str(_abs(c.data.root, base))
        if c.data.synth is not None:
            c.data.synth.root = str(_abs(c.data.synth.root, base))
        c.features.cache_dir = str(_abs(c.features.cache_dir, base))
        c.tracking.artifacts = str(_abs(c.tracking.artifacts, base))
        c.search.storage_path = str(_abs(c.search.storage_path, base))
        c.tracking.uri = resolve_tracking_uri(c.tracking.uri, base)
        return c


def _abs(p: str, base: Path) -> Path:
    if "://" in p:
        return p  # type: ignore[return-value]
    path = Path(p).expanduser()
    return path if path.is_absolute() else (base / path)


def resolve_tracking_uri(uri: str, base: Path) -> str:
    """Make `sqlite:///relative.db` absolute so that Ray workers in other cwds hit the same file."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((base / uri[len(prefix):]).resolve())
    if "://" not in uri:
        return str(_abs(uri, base))
    return uri


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid config"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if not e["loc"]:  # a check across keys (model validator): its message names them
            lines.append(f"  {e['msg'].removeprefix('Value error, ')}")
        elif e["type"] == "extra_forbidden":
            model = _model_at(HarmoniaConfig, e["loc"][:-1])
            valid = ", ".join(sorted(model.model_fields)) if model else "?"
            lines.append(f"  unknown key '{loc}' (valid keys here: {valid})")
        else:
            lines.append(f"  {loc}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        nxt = next((a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nxt is None:
            return None
        model = nxt
    return model


def parse_config(data: dict[str, Any] | None, source: str = "<config>") -> HarmoniaConfig:
    try:
        return HarmoniaConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path) -> HarmoniaConfig:
    """Read a YAML config; malformed YAML and wrong keys raise ConfigError naming file, line, key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: malformed YAML: {getattr(err, 'problem', err)}") from None
    if data is None or data == {}:
        raise ConfigError(f"{path}: empty config file (expected a mapping of keys such as name, data, search, "
                          "space; see configs/quickstart.yaml); run `harmonia quickstart` without a path for "
                          "the packaged default")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return parse_config(data, str(path))
