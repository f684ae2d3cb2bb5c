"""Build a real-audio benchmark set from Debian sound packages, with source-disjoint splits.

Downloads the packages with `apt-get download` into a cache, unpacks them with `dpkg-deb -x`, and
mixes 4-second 16 kHz clips in harmonia's own layout (audio/<split>/, metadata/<split>.tsv strong
labels, <split>_weak.tsv, durations.tsv, classes.txt; what `harmonia data synth` writes): 0-3
excerpts of recorded sounds at random onsets and SNRs over a background recording of noise. Each
class's source recordings are split between train, valid and test (never shared); a class with fewer
than three recordings has its longest recording cut into disjoint time regions. Every clip's `group`
is its loudest event's source recording (its background recording when it has no events).
SOURCES.md and sources.json in the output record packages, versions, licences and the recordings
of every split. `--classes` keeps the events of some classes only (each keeps its split of recordings).
Same arguments give byte-identical files.

    python benchmarks/real_audio.py --out /work/bench_data/real300 --clips 300 --seed 0 --task tagging
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from harmonia.data.audio import load_audio, write_wav
from harmonia.data.shift import Background, plan_backgrounds, render_background, tilt
from harmonia.data.synth import SPLITS, ClipPlan, Event, colored_noise, split_sizes, write_metadata

SR, SECONDS = 16000, 4.0
CACHE = Path("~/.cache/harmonia/debian-sounds").expanduser()
FD = "usr/share/sounds/freedesktop/stereo"
ALLISON = "usr/share/asterisk/sounds/en_US_f_Allison"
HEROES = "usr/share/games/heroes/sfx"
# class -> (package, glob under the unpacked package); each matching file is one source recording
CLASS_SOURCES: dict[str, tuple[tuple[str, str], ...]] = {
    "speech": (("asterisk-core-sounds-en-wav", f"{ALLISON}/digits/*.wav"),
               ("asterisk-core-sounds-en-wav", f"{ALLISON}/letters/*.wav"),
               ("asterisk-core-sounds-en-wav", f"{ALLISON}/phonetic/*.wav"),
               ("sound-theme-freedesktop", f"{FD}/audio-channel-*.oga")),
    "music": (("asterisk-moh-opsound-wav", "usr/share/asterisk/moh/*.wav"),),
    "phone": (("sound-theme-freedesktop", f"{FD}/phone-*.oga"),),
    "chime": tuple(("sound-theme-freedesktop", f"{FD}/{n}.oga") for n in (
        "alarm-clock-elapsed", "bell", "complete", "dialog-error", "dialog-information", "dialog-warning",
        "message", "message-new-instant", "service-login", "service-logout", "suspend-error", "trash-empty",
        "window-attention", "window-question")),
    "notification": tuple(("sound-theme-freedesktop", f"{FD}/{n}.oga") for n in (
        "device-added", "device-removed", "power-plug", "power-unplug", "network-connectivity-established",
        "network-connectivity-lost", "audio-volume-change")),
    "crowd": (("heroes-sound-effects", f"{HEROES}/foule*.wav"),),
    "clock": (("heroes-sound-effects", f"{HEROES}/clock*.wav"),),
}
EVENTS_PER_CLIP = (0, 3)
EVENT_SECONDS = (0.3, 2.5)
SNR_DB = (-3.0, 12.0)
BACKGROUNDS_PER_SPLIT = 4
SILENCE_DB = -40.0  # frames this far below a recording's loudest frame are silence
FRAME = 320  # 20 ms at 16 kHz


class DownloadError(RuntimeError):
    """A Debian package that `apt-get download` could not fetch."""


@dataclass(frozen=True)
class Recording:
    """One source recording (or a disjoint time region of one) and the split it belongs to."""

    id: str  # <package>:<folder>/<file stem>[@<start>-<end>s]
    label: str
    split: str
    package: str
    path: str  # relative to the unpacked package
    licence: str
    region: tuple[float, float] | None  # seconds within the file, after trimming silence
    seconds: float


def fetch_package(name: str, cache: Path) -> tuple[Path, Path]:
    """(the .deb, its unpacked folder) in `cache`, downloading and unpacking only what is missing."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        run = subprocess.run(["apt-get", "download", name], cwd=debs, capture_output=True, text=True)
        found = sorted(debs.glob(f"{name}_*.deb"))
        if run.returncode != 0 or not found:
            raise DownloadError(f"apt-get download {name} failed (exit {run.returncode}): "
                                f"{(run.stderr or run.stdout).strip()[-400:]}")
    root = cache / "unpacked" / found[-1].stem
    if not (root / ".done").is_file():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(root)], check=True)
        (root / ".done").write_text("")
    return found[-1], root


def deb_version(deb: Path) -> str:
    """The package version from the .deb's control file."""
    return subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True,
                          text=True).stdout.strip()


def copyright_file(root: Path, package: str) -> Path:
    return root / "usr/share/doc" / package / "copyright"


def _pattern_matches(pattern: str, rel: str) -> bool:
    """A DEP-5 `Files:` pattern against an installed path: by file name, or by trailing path parts."""
    if "/" not in pattern:
        return fnmatch.fnmatch(Path(rel).name, pattern)
    return fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(rel, f"*/{pattern}")


def licence_of(copyright_text: str, rel: str) -> str:
    """The licence of installed file `rel` from a Debian copyright file: the last matching DEP-5
    `Files:` stanza, else the Creative Commons / GPL licence the free text names."""
    match = None
    for stanza in re.split(r"\n\s*\n", copyright_text):
        files = re.search(r"^Files:(.*(?:\n[ \t]+.*)*)", stanza, re.M)
        lic = re.search(r"^License:\s*(\S+)", stanza, re.M)
        if files and lic and any(_pattern_matches(p, rel) for p in files.group(1).split()):
            match = lic.group(1)
    if match:
        return match
    if re.search(r"Creative Commons Attribution-ShareAlike\s+3\.0", copyright_text):
        return "CC-BY-SA-3.0"
    return "GPL-2+" if "GNU General Public License" in copyright_text else "unknown (see copyright file)"


def active_span(y: np.ndarray) -> tuple[int, int]:
    """(first, last) sample of the frames above SILENCE_DB relative to the loudest frame; (0, 0) if silent."""
    n = len(y) // FRAME
    if n == 0:
        return (0, 0) if not np.any(y) else (0, len(y))
    rms = np.sqrt(np.mean(y[: n * FRAME].reshape(n, FRAME) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (SILENCE_DB / 20)) if rms.max() > 0 else []
    return (0, 0) if len(loud) == 0 else (int(loud[0] * FRAME), int(min(len(y), (loud[-1] + 1) * FRAME)))


def recording_id(package: str, rel: str) -> str:
    """`<package>:<folder>/<stem>`, e.g. `sound-theme-freedesktop:stereo/bell`."""
    path = Path(rel)
    return f"{package}:{path.parent.name}/{path.stem}"


def assign_splits(label: str, items: list[tuple[str, str, Path, str]], audio: dict[str, np.ndarray],
                  rng: np.random.Generator) -> list[Recording]:
    """Split one class's recordings (package, relative path, file, licence) between the splits:
    about 60/20/20 by count, at least one each; with fewer than three, the longest is cut in regions."""
    names = [s for s, _ in SPLITS]
    order = [items[i] for i in rng.permutation(len(items))]
    if len(order) >= 3:
        n_valid = n_test = max(1, int(round(0.2 * len(order))))
        cut = {i: ("valid" if i < n_valid else "test" if i < n_valid + n_test else "train") for i in range(len(order))}
        return [Recording(recording_id(p, r), label, cut[i], p, r, lic, None, len(audio[r]) / SR)
                for i, (p, r, _, lic) in enumerate(order)]
    order.sort(key=lambda it: -len(audio[it[1]]))
    longest, rest = order[0], order[1:]
    # the longest recording gives its regions to the splits the other recordings do not cover
    regions = names[len(rest):] if rest else names
    shares = np.array([dict(SPLITS)[s] for s in regions]) / sum(dict(SPLITS)[s] for s in regions)
    edges = np.round(np.concatenate([[0.0], np.cumsum(shares)]) * len(audio[longest[1]]) / SR, 3)
    out = [Recording(recording_id(p, r), label, names[i], p, r, lic, None, len(audio[r]) / SR)
           for i, (p, r, _, lic) in enumerate(rest)]
    p, r, _, lic = longest
    out += [Recording(f"{recording_id(p, r)}@{a:g}-{b:g}s", label, s, p, r, lic, (float(a), float(b)), float(b - a))
            for s, a, b in zip(regions, edges[:-1], edges[1:])]
    return out


def load_sources(cache: Path, seed: int, classes: tuple[str, ...] = tuple(CLASS_SOURCES),
                 ) -> tuple[dict[str, dict], list[Recording], dict[str, np.ndarray]]:
    """Packages (version, licences, deb), every recording of `classes` with its split, and recording id ->
    samples. A class's split of its recordings does not depend on which other classes are chosen."""
    packages: dict[str, dict] = {}
    roots: dict[str, Path] = {}
    for name in sorted({p for c in classes for p, _ in CLASS_SOURCES[c]}):
        deb, roots[name] = fetch_package(name, cache)
        text = copyright_file(roots[name], name).read_text(errors="replace")
        packages[name] = {"version": deb_version(deb), "deb": deb.name, "licences": set(), "copyright": text}
    recordings: list[Recording] = []
    samples: dict[str, np.ndarray] = {}
    for index, (label, sources) in enumerate(CLASS_SOURCES.items()):
        if label not in classes:
            continue
        items, audio = [], {}
        for package, pattern in sources:
            for file in sorted(roots[package].glob(pattern)):
                y = load_audio(file, SR)
                a, b = active_span(y)
                if b - a < FRAME:
                    continue
                rel = file.relative_to(roots[package]).as_posix()
                audio[rel] = y[a:b]
                items.append((package, rel, file, licence_of(packages[package]["copyright"], rel)))
        if not items:
            raise FileNotFoundError(f"class {label!r}: no recordings found for {sources}")
        for rec in assign_splits(label, items, audio, np.random.default_rng([seed, index])):
            y = audio[rec.path]
            samples[rec.id] = y if rec.region is None else y[int(rec.region[0] * SR):int(rec.region[1] * SR)]
            packages[rec.package]["licences"].add(rec.licence)
            recordings.append(rec)
    return packages, recordings, samples


def plan_events(rng: np.random.Generator, size: int, classes: list[str]) -> list[list[str]]:
    """Labels of each clip's 0-3 events; every class occurs at least once in the split."""
    lo, hi = EVENTS_PER_CLIP
    if size * hi < len(classes):
        raise ValueError(f"a split of {size} clips cannot hold all {len(classes)} classes (at most {hi} events each)")
    counts = rng.integers(lo, hi + 1, size)
    while counts.sum() < len(classes):
        counts[rng.choice(np.flatnonzero(counts < hi))] += 1
    labels = list(rng.permutation(classes)) + list(rng.choice(classes, int(counts.sum()) - len(classes)))
    labels = [str(x) for x in rng.permutation(labels)]
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [labels[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def mix_clip(rng: np.random.Generator, labels: list[str], pools: dict[str, list[Recording]],
             samples: dict[str, np.ndarray], bed: Background) -> tuple[np.ndarray, list[Event], str]:
    """(clip, events, group): excerpts of the split's recordings over background `bed`."""
    n = int(round(SECONDS * SR))
    y = render_background(rng, n, SR, bed, colored_noise)
    bg_rms = 10 ** (bed.level_db / 20)
    events, group, loudest = [], bed.id, -1.0
    for label in labels:
        pool = pools[label]
        rec = pool[int(rng.integers(len(pool)))]
        src = samples[rec.id]
        want = int(round(rng.uniform(*EVENT_SECONDS) * SR))
        d = min(len(src), want, n)
        start = int(rng.integers(0, len(src) - d + 1))
        a, b = active_span(src[start:start + d])
        piece = src[start + a:start + b].astype(np.float64)
        onset = int(rng.integers(0, (n - len(piece)) // 16 + 1)) * 16  # whole milliseconds
        if len(piece) < FRAME:
            continue
        ramp = np.minimum(1.0, np.minimum(np.arange(len(piece)), np.arange(len(piece))[::-1]) / (0.005 * SR))
        snr = rng.uniform(*SNR_DB)
        y[onset:onset + len(piece)] += piece * ramp * (bg_rms * 10 ** (snr / 20) / (np.sqrt(np.mean(piece**2)) + 1e-12))
        events.append(Event(onset / SR, (onset + len(piece)) / SR, label))
        if 10 ** (snr / 10) * len(piece) > loudest:
            group, loudest = rec.id, 10 ** (snr / 10) * len(piece)
    y = tilt(y, SR, bed.channel_tilt)
    peak = np.abs(y).max()
    if peak > 0.95:
        y *= 0.95 / peak
    return y.astype(np.float32), sorted(events, key=lambda e: (e.onset, e.offset, e.label)), group


def chosen_classes(classes: tuple[str, ...] | None) -> list[str]:
    """`classes` in CLASS_SOURCES order (all of them when None); ValueError naming an unknown one."""
    if classes is None:
        return list(CLASS_SOURCES)
    unknown = sorted(set(classes) - set(CLASS_SOURCES))
    if unknown or not classes:
        raise ValueError(f"classes: unknown {', '.join(unknown) or '(none given)'}; valid: {', '.join(CLASS_SOURCES)}")
    return [c for c in CLASS_SOURCES if c in classes]


def build(out: Path, clips: int, seed: int, task: str, cache: Path = CACHE,
          classes: tuple[str, ...] | None = None) -> dict:
    """Write the benchmark set under `out` (events of `classes` only, when given); returns the sources record
    written to sources.json."""
    if task not in ("tagging", "sed"):
        raise ValueError(f"task must be tagging or sed, got {task!r}")
    classes = chosen_classes(classes)
    if (out / "audio").exists() or (out / "metadata").exists():
        raise ValueError(f"{out} already holds a dataset (audio/ or metadata/): choose a new folder or remove it")
    t0 = time.time()
    packages, recordings, samples = load_sources(cache, seed, tuple(classes))
    rng = np.random.default_rng([seed, 0xA0D10])
    plans, groups, beds = [], {}, {}
    index = 0
    for (split, _), size in zip(SPLITS, split_sizes(clips)):
        pools = {c: [r for r in recordings if r.label == c and r.split == split] for c in classes}
        beds[split] = plan_backgrounds(rng, split, BACKGROUNDS_PER_SPLIT)
        for labels in plan_events(rng, size, classes):
            bed = beds[split][int(rng.integers(len(beds[split])))]
            y, events, group = mix_clip(rng, labels, pools, samples, bed)
            plan = ClipPlan(split, f"real_{index:06d}.wav", tuple(events), index)
            write_wav(out / "audio" / split / plan.name, y, SR)
            plans.append(plan)
            groups[f"{split}/{plan.name}"] = group
            index += 1
    write_metadata(out, plans, SECONDS, SR, tuple(classes), groups)
    record = {
        "task": task, "clips": clips, "seed": seed, "seconds": SECONDS, "sample_rate": SR, "classes": classes,
        "packages": {k: {"version": v["version"], "deb": v["deb"], "licences": sorted(v["licences"])}
                     for k, v in packages.items()},
        "recordings": [asdict(r) for r in recordings],
        "backgrounds": {s: [asdict(b) for b in bs] for s, bs in beds.items()},
        "groups": groups,
    }
    (out / "sources.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "SOURCES.md").write_text(sources_markdown(record))
    print(f"wrote {clips} clips ({', '.join(f'{s} {n}' for (s, _), n in zip(SPLITS, split_sizes(clips)))}) "
          f"of {len(classes)} classes to {out} in {time.time() - t0:.1f} s")
    return record


def sources_markdown(record: dict) -> str:
    """SOURCES.md: packages with versions and licences, then each class's recordings per split."""
    subset = "" if record["classes"] == list(CLASS_SOURCES) else f" --classes {','.join(record['classes'])}"
    lines = ["# Sources", "", f"Built by `benchmarks/real_audio.py --clips {record['clips']} --seed {record['seed']} "
             f"--task {record['task']}{subset}` from Debian packages (`apt-get download`, `dpkg-deb -x`).", "",
             "| package | version | licences |", "|---|---|---|"]
    lines += [f"| {k} | {v['version']} | {', '.join(v['licences'])} |" for k, v in record["packages"].items()]
    lines += ["", "Each clip's `group` (metadata TSVs) is its loudest event's recording id, or its background "
              "recording (`<split>-bg-<i>`, coloured noise with hum) when it has no events.", ""]
    for label in record["classes"]:
        lines += [f"## {label}", ""]
        for split, _ in SPLITS:
            recs = [r for r in record["recordings"] if r["label"] == label and r["split"] == split]
            items = ", ".join(f"`{r['id']}` ({r['licence']}, {r['seconds']:.2f} s)" for r in recs)
            lines.append(f"- {split} ({len(recs)}): {items}")
        if any(r["region"] for r in record["recordings"] if r["label"] == label):
            lines.append("- too few recordings: the longest is cut into disjoint time regions (`@start-end s`)")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (keep it outside the repository)")
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", choices=("tagging", "sed"), default="tagging")
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"package cache (default {CACHE})")
    parser.add_argument("--classes", type=lambda s: tuple(c.strip() for c in s.split(",") if c.strip()),
                        help=f"comma-separated subset of: {', '.join(CLASS_SOURCES)} (default all)")
    args = parser.parse_args(argv)
    try:
        build(args.out, args.clips, args.seed, args.task, args.cache, args.classes)
    except (DownloadError, ValueError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
