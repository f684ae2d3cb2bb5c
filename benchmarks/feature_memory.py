"""Memory and epoch time of a trial over memory-mapped features vs the in-memory FeatureSet, same run.

The parent writes a synthetic dataset of real WAV files (noise + tones, `--clips` clips of `--seconds`
s, 64 mels), fills the feature cache, writes the consolidated memory-mapped files
(`feature_store.build_mapped_feature_set`) and pickles the in-memory FeatureSet (what a trial
deserializes from the object store). Then one fresh child process per path, alternating for
`--repeats` rounds, gets its features (unpickled, or `MappedFeatureSet.open()`) and trains `--epochs`
epochs of a small CRNN with one torch thread. Each child reports its peak RSS (`ru_maxrss`), the peak
of its anonymous and of its file-backed resident memory (sampled from /proc every 20 ms: file-backed
pages of a memory map are page cache the kernel can drop, anonymous ones are not), the anonymous
memory its features add when loaded, and its epoch time in wall and CPU seconds (CPU seconds are
robust to other load on the machine; the round with the fewest counts).
The page cache is warm for both (the parent just wrote the files): this measures the trial's own
memory, not disk speed. 
    python benchmarks/feature_memory.py [--clips 400] [--seconds 10] [--epochs 1] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

SR = 16000
PARAMS = {"arch": "crnn", "crnn.blocks": 2, "crnn.channels": 8, "crnn.gru_size": 16, "batch_size": 32}


def make_dataset(root: Path, clips: int, seconds: float):
    """`clips` WAVs (70 % train, 15 % valid, 15 % test) of noise plus one of four tones, and their table."""
    from harmonia.data.audio import write_wav
    from harmonia.data.datasets import Dataset

    classes = ["a", "b", "c", "d"]
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    rows = []
    for i in range(clips):
        split = "train" if i % 20 < 14 else ("valid" if i % 20 < 17 else "test")
        k = i % len(classes)
        y = 0.05 * rng.standard_normal(len(t)) + 0.3 * np.sin(2 * np.pi * (300 + 400 * k) * t)
        path = root / "audio" / f"clip{i:05d}.wav"
        write_wav(path, y.astype(np.float32), SR)
        rows.append((f"clip{i:05d}", str(path), split, seconds, [classes[k]], [classes[k]]))
    table = pd.DataFrame(rows, columns=["clip_id", "path", "split", "duration", "tags", "sequence"])
    events = pd.DataFrame(columns=["clip_id", "onset", "offset", "event_label"])
    return Dataset(root, classes, table, events, has_strong=False)


class MemorySampler:
    """Peak RssAnon and RssFile (kB) of this process, sampled from /proc/self/status in a thread."""

    def __init__(self, every: float = 0.02):
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self.current = dict(self.peak)
        self.every, self.stop = every, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def sample(self) -> None:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in self.peak:
                self.current[key] = int(value.split()[0])
                self.peak[key] = max(self.peak[key], self.current[key])

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.sample()

    def __enter__(self) -> "MemorySampler":
        self.sample()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.sample()


def child(path: str, features: str, epochs: int) -> None:
    """One trial's view: get the features, train `epochs` epochs; print one JSON line of measurements."""
    import torch

    from harmonia.trainables.training import Trainer

    torch.set_num_threads(1)
    with MemorySampler() as mem:
        base_anon = mem.current["RssAnon"]
        start = time.perf_counter()
        if features == "mapped":
            from harmonia.feature_store import MappedFeatureSet

            fs = MappedFeatureSet(**json.loads(Path(path).read_text())).open()
        else:
            with open(path, "rb") as f:
                fs = pickle.load(f)
        load_s = time.perf_counter() - start
        mem.sample()
        loaded_anon = mem.current["RssAnon"]
        trainer = Trainer(PARAMS, fs, max_epochs=epochs, patience=epochs, seed=0, device=torch.device("cpu"))
        times, cpu = [], []
        for _ in range(epochs):
            start, start_cpu = time.perf_counter(), time.process_time()
            result = trainer.run_epoch()  # a train epoch and a pass over valid, as a trial's epoch
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    print(json.dumps({"features": features, "load_s": load_s, "epoch_s": min(times), "epoch_cpu_s": min(cpu),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "peak_anon_mb": mem.peak["RssAnon"] / 1024, "peak_file_mb": mem.peak["RssFile"] / 1024,
                      "load_anon_mb": (loaded_anon - base_anon) / 1024, "valid_mAP": result.metrics["valid_mAP"]}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=400)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--child", nargs=2, metavar=("PATH", "FEATURES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], args.epochs)

    from harmonia.config import FeatureConfig
    from harmonia.feature_store import build_mapped_feature_set, scan_cache
    from harmonia.featureset import build_feature_set

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ds = make_dataset(root / "data", args.clips, args.seconds)
        cfg = FeatureConfig(cache_dir=str(root / "cache"))
        mb = scan_cache(ds, cfg, progress=False).nbytes / 2**20
        handle = build_mapped_feature_set(ds, cfg, progress=False)
        (root / "handle.json").write_text(json.dumps({"root": handle.root, "key": handle.key}))
        with open(root / "features.pkl", "wb") as f:
            pickle.dump(build_feature_set(ds, cfg, progress=False), f, protocol=5)
        print(f"{args.clips} clips of {args.seconds:g} s: {mb:.0f} MB of features; {args.epochs} epoch(s) of "
              f"{PARAMS['arch']} per child, best of {args.repeats} rounds")
        best: dict[str, dict] = {}
        for r in range(args.repeats):
            for features in (("in_memory", "mapped") if r % 2 == 0 else ("mapped", "in_memory")):
                path = root / ("handle.json" if features == "mapped" else "features.pkl")
                out = subprocess.run([sys.executable, __file__, "--epochs", str(args.epochs), "--child", str(path),
                                      features], check=True, capture_output=True, text=True).stdout
                m = json.loads(out.strip().splitlines()[-1])
                if features not in best or m["epoch_cpu_s"] < best[features]["epoch_cpu_s"]:
                    best[features] = m
        print(f"{'features':<10} {'peak RSS MB':>12} {'peak anon MB':>13} {'peak file MB':>13} {'anon +load MB':>14} "
              f"{'load s':>7} {'epoch s':>8} {'epoch CPU s':>12} {'valid mAP':>10}")
        for name, m in best.items():
            print(f"{name:<10} {m['peak_rss_mb']:>12.0f} {m['peak_anon_mb']:>13.0f} {m['peak_file_mb']:>13.0f} "
                  f"{m['load_anon_mb']:>14.0f} {m['load_s']:>7.2f} {m['epoch_s']:>8.2f} {m['epoch_cpu_s']:>12.2f} "
                  f"{m['valid_mAP']:>10.4f}")


if __name__ == "__main__":
    main()
