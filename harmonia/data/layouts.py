"""`harmonia data synth OUT --layout NAME`: the synthetic dataset laid out as each registered format.

harmonia's own synthetic dataset is written first (`harmonia.data.synth`), read back, and its audio
files moved into the folders and names of the format, with its metadata written as that format's
files; so every format is tested on real WAV files, and a user can see an example of each.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harmonia.data.datasets import Dataset, load_dataset
from harmonia.data.synth import synthesize, synthesize_scenes

STAGING = ".harmonia_synth"


@dataclass(frozen=True)
class SynthArgs:
    clips: int = 600
    seconds: float = 4.0
    seed: int = 0
    sample_rate: int = 16000
    progress: bool = False
    scenes: int = 10
    classes: tuple[str, ...] = ()  # a subset of the synthetic classes (empty: all ten)
    shift: bool = False  # splits from disjoint sound instances, a group per clip (harmonia.data.synth)


@dataclass(frozen=True)
class Clip:
    """One synthetic clip as a layout writer sees it: labels, events, split and a small group number."""

    split: str
    path: Path
    tags: list[str]
    events: list[tuple[float, float, str]]
    group: int
    duration: float

    @property
    def main_label(self) -> str:
        """The label of the longest event: what a single-label format (ESC-50, FSD…) keeps."""
        return max(self.events, key=lambda e: (e[1] - e[0], e[2]))[2] if self.events else self.tags[0]


Writer = Callable[[Path, list[Clip], list[str]], None]
LAYOUTS: dict[str, Writer] = {}


def layout(name: str) -> Callable[[Writer], Writer]:
    """Register a layout writer under the name of the format it writes."""
    def add(fn: Writer) -> Writer:
        LAYOUTS[name] = fn
        return fn
    return add


def _clips(ds: Dataset) -> list[Clip]:
    groups = {g: i for i, g in enumerate(dict.fromkeys(ds.clips["group"]))}
    events = {cid: list(zip(g["onset"], g["offset"], g["event_label"])) for cid, g in ds.events.groupby("clip_id")}
    return [Clip(r.split, Path(r.path), list(r.tags), events.get(r.clip_id, []), groups[r.group], float(r.duration))
            for r in ds.clips.itertuples(index=False)]


def _move(clip: Clip, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(clip.path, dest)


def _tsv(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue())


def _strong_rows(name: str, clip: Clip) -> list[str]:
    return [f"{name}\t{on:.3f}\t{off:.3f}\t{label}" for on, off, label in clip.events]


@layout("flat")
def write_flat(out: Path, clips: list[Clip], classes: list[str]) -> None:
    """audio/<clip>.wav for every split; metadata/<split>.tsv, <split>_weak.tsv (with group), durations.tsv."""
    meta = out / "metadata"
    for split in ("train", "valid", "test"):
        members = [c for c in clips if c.split == split]
        _tsv(meta / f"{split}.tsv", "filename\tonset\toffset\tevent_label",
             [row for c in members for row in _strong_rows(c.path.name, c)])
        _tsv(meta / f"{split}_weak.tsv", "filename\tevent_labels\tgroup",
             [f"{c.path.name}\t{','.join(c.tags)}\tsource{c.group}" for c in members])
    _tsv(meta / "durations.tsv", "filename\tduration", [f"{c.path.name}\t{c.duration:.3f}" for c in clips])
    (meta / "classes.txt").write_text("\n".join(classes) + "\n")
    for c in clips:
        _move(c, out / "audio" / c.path.name)


def _youtube_name(clip: Clip, index: int) -> str:
    ident = hashlib.sha1(f"group{clip.group}".encode()).hexdigest()[:11]
    start = 10.0 * (index % 30)
    return f"Y{ident}_{start:.3f}_{start + clip.duration:.3f}.wav"


DESED_TRAIN_SUBSETS: tuple[str, ...] = ("weak", "synthetic21_train/soundscapes", "unlabel_in_domain")


@layout("desed")
def write_desed(out: Path, clips: list[Clip], classes: list[str]) -> None:
    """Train clips dealt into weak, synthetic soundscapes (strong) and unlabel_in_domain; valid ->
    validation/validation (strong + durations); test -> eval/public (strong)."""
    subsets: dict[str, list[tuple[str, Clip]]] = {}
    train = [c for c in clips if c.split == "train"]
    for i, c in enumerate(train):
        subset = DESED_TRAIN_SUBSETS[i % 3]
        name = f"{i}.wav" if subset.startswith("synthetic") else _youtube_name(c, i)
        subsets.setdefault(f"train/{subset}", []).append((name, c))
    for split, subset in (("valid", "validation/validation"), ("test", "eval/public")):
        for i, c in enumerate(c for c in clips if c.split == split):
            subsets.setdefault(subset, []).append((_youtube_name(c, i), c))
    for subset, members in subsets.items():
        meta = out / "metadata" / f"{subset}.tsv"
        if subset == "train/weak":
            _tsv(meta, "filename\tevent_labels", [f"{n}\t{','.join(c.tags)}" for n, c in members])
        elif subset == "train/unlabel_in_domain":
            _tsv(meta, "filename", [n for n, _ in members])
        else:
            _tsv(meta, "filename\tonset\toffset\tevent_label", [r for n, c in members for r in _strong_rows(n, c)])
        if subset.startswith("validation"):
            _tsv(out / "metadata" / f"{subset}_durations.tsv", "filename\tduration",
                 [f"{n}\t{c.duration:.3f}" for n, c in members])
        for name, c in members:
            _move(c, out / "audio" / subset / name)


@layout("fsdkaggle2018")
def write_fsdkaggle2018(out: Path, clips: list[Clip], classes: list[str]) -> None:
    """train.csv (train), test_post_competition.csv (valid: usage Public, test: Private); one label each."""
    train, test = [], []
    for i, c in enumerate(clips):
        name = f"{i:08x}.wav"
        if c.split == "train":
            train.append([name, c.main_label, 1, 100000 + c.group])
            _move(c, out / "audio_train" / name)
        else:
            test.append([name, c.main_label, "Public" if c.split == "valid" else "Private", 100000 + c.group])
            _move(c, out / "audio_test" / name)
    _csv(out / "train.csv", ["fname", "label", "manually_verified", "freesound_id"], train)
    _csv(out / "test_post_competition.csv", ["fname", "label", "usage", "freesound_id"], test)


@layout("fsd50k")
def write_fsd50k(out: Path, clips: list[Clip], classes: list[str]) -> None:
    """FSD50K.ground_truth/{dev,eval,vocabulary}.csv; dev split train/val from train/valid, eval from test."""
    mids = {label: f"/m/{i:04d}" for i, label in enumerate(classes)}
    dev, evaluation = [], []
    for i, c in enumerate(clips):
        fname, labels = 200000 + i, ",".join(c.tags)
        row = [fname, labels, ",".join(mids[t] for t in c.tags)]
        if c.split == "test":
            evaluation.append(row)
            _move(c, out / "FSD50K.eval_audio" / f"{fname}.wav")
        else:
            dev.append([*row, "train" if c.split == "train" else "val"])
            _move(c, out / "FSD50K.dev_audio" / f"{fname}.wav")
    truth = out / "FSD50K.ground_truth"
    _csv(truth / "dev.csv", ["fname", "labels", "mids", "split"], dev)
    _csv(truth / "eval.csv", ["fname", "labels", "mids"], evaluation)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([[i, label, mids[label]] for i, label in enumerate(classes)])
    (truth / "vocabulary.csv").write_text(buf.getvalue())


def _fold(clip: Clip, train_folds: int) -> int:
    """Train clips spread over folds 1..train_folds by group (a group never spans folds); valid and test
    get the next two folds."""
    return {"valid": train_folds + 1, "test": train_folds + 2}.get(clip.split, 1 + clip.group % train_folds)


@layout("esc50")
def write_esc50(out: Path, clips: list[Clip], classes: list[str]) -> None:
    """meta/esc50.csv and audio/<fold>-<src>-<take>-<target>.wav; valid is fold 4, test fold 5."""
    rows = []
    for i, c in enumerate(clips):
        fold, target, src = _fold(c, 3), classes.index(c.main_label), 100000 + c.group
        take = chr(ord("A") + i % 26)
        name = f"{fold}-{src}-{take}-{target}.wav"
        rows.append([name, fold, target, c.main_label, "False", src, take])
        _move(c, out / "audio" / name)
    _csv(out / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"], rows)


@layout("urbansound8k")
def write_urbansound8k(out: Path, clips: list[Clip], classes: list[str]) -> None:
    """metadata/UrbanSound8K.csv and audio/fold<k>/<fsID>-<classID>-0-<slice>.wav; valid fold 9, test 10."""
    rows = []
    for i, c in enumerate(clips):
        fold, class_id, fs_id = _fold(c, 8), classes.index(c.main_label), 300000 + c.group
        name = f"{fs_id}-{class_id}-0-{i}.wav"
        rows.append([name, fs_id, 0.0, round(c.duration, 3), 1, fold, class_id, c.main_label])
        _move(c, out / "audio" / f"fold{fold}" / name)
    _csv(out / "metadata" / "UrbanSound8K.csv",
         ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"], rows)


def _common(args: SynthArgs) -> dict:
    extra = {"classes": args.classes} if args.classes else {}
    if args.shift:
        extra["shift"] = True
    return dict(clips=args.clips, seconds=args.seconds, seed=args.seed, sample_rate=args.sample_rate,
                progress=args.progress, **extra)


GENERATED: dict[str, Callable[[Path, SynthArgs], Path]] = {
    "harmonia": lambda out, args: synthesize(out, **_common(args)),
    "dcase2018_task1": lambda out, args: synthesize_scenes(out, scenes=args.scenes,
                                                           **{k: v for k, v in _common(args).items()
                                                              if k not in ("classes", "shift")}),
}
"""Layouts generated directly: harmonia's own and the DCASE 2018 task 1 scenes."""


def layout_names() -> list[str]:
    """Every layout `data synth --layout` writes (one per registered format)."""
    return [*GENERATED, *LAYOUTS]


def synthesize_layout(out: str | Path, name: str, args: SynthArgs = SynthArgs()) -> Path:
    """Write the synthetic dataset under `out` in layout `name` (a format name); same arguments, same files."""
    out = Path(out)
    if name in GENERATED:
        return GENERATED[name](out, args)
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; valid: {', '.join(layout_names())}")
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    ds = load_dataset(synthesize(staging, **_common(args)))
    LAYOUTS[name](out, _clips(ds), list(ds.classes))
    shutil.rmtree(staging)
    return out
