"""Do the recommended ensembles beat the best single model on new audio? Resampled, with and without shift.

From the trial predictions of a real search (a fixture under benchmarks/fixtures/, or an MLflow
experiment), every method and the recommendation rule are refitted on R resamples of valid and
scored on test, under three schemes:
- shift kept: bootstrap within valid and within test (whole source groups when the set has them),
  so valid and test keep coming from different recordings;
- shift removed: random resplits of the pooled valid + test clips into the same sizes;
- grouped resplit: random resplits of the pooled clips by whole source groups (valid and test still
  from different recordings, but which recordings land in test is random, so the fixed split's own
  difficulty gap between valid and test averages out and the estimators' optimism shows alone).
Printed per candidate: mean test gain over the best single model (chosen on the same valid sample),
the fraction of wins, the worst gain, and the mean optimism (honest valid score minus test, and
in-sample valid score minus test), then the issue's targets with their measured values.

    python benchmarks/ensemble_validity.py benchmarks/fixtures/*.npz          # R=50 per scheme
    python benchmarks/ensemble_validity.py --experiment quickstart --save benchmarks/fixtures/quickstart.npz
    python benchmarks/ensemble_validity.py benchmarks/fixtures/*.npz --dump /tmp/validity   # keep per-resample results
    python benchmarks/ensemble_validity.py --from-dump /tmp/validity/*.json                 # re-apply the rules only
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

METHODS = ["best_single", "average", "bagged_selection", "selection", "weighted", "per_class_selection", "stacking"]
RULES = {"recommended (anchored)": "anchored", "one_se rule": "one_se", "paired_se rule": "paired_se",
         "best honest": "best"}
RECOMMENDED = "recommended (anchored)"  # the default rule (ensembles/honest.py DEFAULT_RULE)


def save_library(uri: str, experiment: str, out: Path) -> None:
    """The experiment's library as a small npz fixture: float16 predictions, labels, groups, names."""
    from harmonia.ensembles.library import clip_groups, collect

    lib = collect(uri, experiment, progress=True, sed=False)
    gv, gt = clip_groups(lib, lib.valid_ids), clip_groups(lib, lib.test_ids)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, valid=lib.valid.astype(np.float16), test=lib.test.astype(np.float16),
                        y_valid=lib.y_valid.astype(np.int8), y_test=lib.y_test.astype(np.int8),
                        valid_ids=np.array(lib.valid_ids), test_ids=np.array(lib.test_ids),
                        groups_valid=np.array(lib.valid_ids if gv is None else gv),
                        groups_test=np.array(lib.test_ids if gt is None else gt),
                        names=np.array(lib.run_names), classes=np.array(lib.classes))
    print(f"wrote {out}: {lib.valid.shape[0]} members, {len(lib.valid_ids)} valid / {len(lib.test_ids)} test clips")


def library_of(v, yv, gv, t, yt, gt):
    """A Library over resampled arrays; clip ids are positions, groups map them (valid and test) to their source."""
    from harmonia.ensembles.library import Library

    vid = [f"v{i}" for i in range(len(yv))]
    tid = [f"t{i}" for i in range(len(yt))]
    return Library(classes=[f"c{i}" for i in range(yv.shape[1])], run_ids=[f"m{i}" for i in range(len(v))],
                   run_names=[f"m{i}" for i in range(len(v))], valid_ids=vid, test_ids=tid, y_valid=yv, y_test=yt,
                   valid=v, test=t, skipped={}, groups=dict(zip(vid + tid, map(str, [*gv, *gt]))))


def evaluate(args: tuple) -> dict:
    """Every method and rule on one resample: test, honest and in-sample valid scores, and picks."""
    from harmonia.ensembles.methods import METHOD_INFO, fit_method
    from harmonia.ensembles.stage import honest_method, honest_setup
    from harmonia.metrics import get_metric

    v, yv, gv, t, yt, gt, metric = args
    m = get_metric(metric)
    lib = library_of(v, yv, gv, t, yt, gt)
    setup = honest_setup(lib)  # grouped unless the resample mixes valid's and test's sources (shift removed)
    groups = setup.groups(lib, lib.valid_ids)
    out = {}
    for name in METHODS:
        kw = {"size": 20} if METHOD_INFO[name].sized else {}
        fitted = fit_method(name, v, yv, metric, groups=groups, **kw)
        honest = honest_method(lib, setup, name, metric, **kw)
        out[name] = {"test": m(yt, fitted.predict(t)), "honest": honest.mean, "insample": m(yv, fitted.predict(v)),
                     "score": honest}
    picks = rule_picks({n: out[n]["score"] for n in METHODS}, metric, setup.shared_sources)
    picks["in-sample best (old CLI rule)"] = max(METHODS, key=lambda n: m.sign() * out[n]["insample"])
    for r in out.values():
        r["score"] = r["score"].to_dict() | {"boot": [float(b) for b in r["score"].boot]}
    return {"methods": out, "picks": picks, "shared_sources": setup.shared_sources}


def rule_picks(scores: dict, metric: str, shared_sources: bool) -> dict[str, str]:
    """Each rule's pick among the methods, from their honest scores (name -> HonestScore) and whether the
    resample's test shares valid's sources."""
    from harmonia.ensembles.honest import Candidate, recommend
    from harmonia.ensembles.methods import METHOD_INFO

    cands = [Candidate(n, METHOD_INFO[n].complexity, scores[n]) for n in METHODS]
    return {label: recommend(cands, metric, rule, shared_sources=shared_sources) for label, rule in RULES.items()}


def repick(result: dict, metric: str) -> dict:
    """The rules re-applied to one saved resample (its honest scores and bootstrap replicates)."""
    from harmonia.ensembles.honest import DEFAULT_FOLDS, HonestScore

    def honest(d: dict) -> HonestScore:
        return HonestScore(d["score"], d["boot"], d["folds"], d["grouped"], d["f1"], d.get("k", DEFAULT_FOLDS))

    # dumps written before "shared_sources" was saved: every fixture has groups, so ungrouped folds mean shared ones
    shared = result.get("shared_sources", not result["methods"]["best_single"]["score"]["grouped"])
    picks = rule_picks({n: honest(result["methods"][n]["score"]) for n in METHODS}, metric, shared)
    picks["in-sample best (old CLI rule)"] = result["picks"]["in-sample best (old CLI rule)"]
    return {"methods": result["methods"], "picks": picks, "shared_sources": shared}


def resamples(lib: dict, scheme: str, r: int, seed: int):
    """(valid preds, y, groups, test preds, y, groups) for each of `r` resamples of one scheme."""
    from harmonia.ensembles.honest import bootstrap_indices

    rng = np.random.default_rng(seed)
    v, t = lib["valid"].astype(np.float32), lib["test"].astype(np.float32)
    yv, yt, gv, gt = lib["y_valid"], lib["y_test"], lib["groups_valid"], lib["groups_test"]
    for i in range(r):
        if scheme == "shift kept":
            iv = bootstrap_indices(len(yv), gv, b=1, seed=int(rng.integers(2**31)))[0]
            it = bootstrap_indices(len(yt), gt, b=1, seed=int(rng.integers(2**31)))[0]
            yield v[:, iv], yv[iv], gv[iv], t[:, it], yt[it], gt[it]
        else:
            pv, py, pg = np.concatenate([v, t], 1), np.concatenate([yv, yt]), np.concatenate([gv, gt])
            a, b = grouped_split(pg, len(yv), rng) if scheme == "grouped resplit" else _halves(rng, len(py), len(yv))
            yield pv[:, a], py[a], pg[a], pv[:, b], py[b], pg[b]


def _halves(rng: np.random.Generator, n: int, n_valid: int) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    return order[:n_valid], order[n_valid:]


def grouped_split(groups: np.ndarray, n_valid: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Whole groups in a random order to valid until it holds about ``n_valid`` clips; the rest to test."""
    names = np.unique(groups)
    valid, size = [], 0
    for name in rng.permutation(names):
        count = int(np.sum(groups == name))
        if size + count / 2 <= n_valid:  # take the group if that lands nearer the target than leaving it
            valid.append(name)
            size += count
    in_valid = np.isin(groups, valid)
    return np.flatnonzero(in_valid), np.flatnonzero(~in_valid)


def summarize(results: list[dict]) -> tuple[list[dict], dict]:
    """Per candidate: gain over the best single model on test, wins, worst, optimism; plus target inputs."""
    single = np.array([res["methods"]["best_single"]["test"] for res in results])
    rows = []
    any_gain = np.array([max(res["methods"][n]["test"] for n in METHODS) > s + 1e-12 for res, s in zip(results, single)])
    for label in [*METHODS, *results[0]["picks"]]:
        picked = [res["picks"].get(label, label) for res in results]
        test = np.array([res["methods"][p]["test"] for res, p in zip(results, picked)])
        honest = np.array([res["methods"][p]["honest"] for res, p in zip(results, picked)])
        insample = np.array([res["methods"][p]["insample"] for res, p in zip(results, picked)])
        gain = test - single
        rows.append({"candidate": label, "gain": gain.mean(), "gain_sd": gain.std(), "wins": (gain > 1e-12).mean(),
                     "worst": gain.min(), "honest_opt": (honest - test).mean(), "insample_opt": (insample - test).mean(),
                     "wins_where_any": (gain[any_gain] > 1e-12).mean() if any_gain.any() else float("nan"),
                     "picked": ", ".join(f"{n}×{picked.count(n)}" for n in dict.fromkeys(picked)) if label not in METHODS else "",
                     "gains": gain})
    return rows, {"any_gain": any_gain.mean()}


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}\n")
    print("| candidate | mean test gain ± sd | wins | worst | honest optimism | in-sample optimism | picks |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['candidate']} | {r['gain']:+.3f} ± {r['gain_sd']:.3f} | {100 * r['wins']:.0f} % | {r['worst']:+.3f} "
              f"| {r['honest_opt']:+.3f} | {r['insample_opt']:+.3f} | {r['picked']} |")


def targets(name: str, tables: dict[str, list[dict]], realistic: bool) -> None:
    """The issue's targets on this set, each with its measured value; the shift-kept ones under each
    shift-kept scheme that ran (bootstrap within the fixed split, and grouped resplits)."""
    checks = []
    for scheme in [s for s in ("shift kept", "grouped resplit") if s in tables]:
        by = {r["candidate"]: r for r in tables[scheme]}
        rec = by[RECOMMENDED]
        robust = max(by["bagged_selection"]["gain"], by["average"]["gain"])
        checks += [(f"{scheme}: recommendation mean gain >= -0.005", rec["gain"], rec["gain"] >= -0.005),
                   (f"{scheme}: no recommendation below best single by > 0.03", rec["worst"], rec["worst"] >= -0.03),
                   (f"{scheme}: honest optimism of the recommendation within ±0.02", rec["honest_opt"],
                    abs(rec["honest_opt"]) <= 0.02)]
        if realistic:
            checks += [(f"{scheme}: realistic synthetic: mean gain >= +0.01", rec["gain"], rec["gain"] >= 0.01),
                       (f"{scheme}: realistic synthetic: wins >= 80 %", rec["wins"], rec["wins"] >= 0.8)]
        if robust >= 0.01:
            at_least = (rec["gains"] >= by["average"]["gains"] - 1e-12).mean()
            checks.append((f"{scheme}: robust methods gain: recommendation >= average in >= 80 % of resamples",
                           at_least, at_least >= 0.8))
    if "shift removed" in tables:
        rrec = {r["candidate"]: r for r in tables["shift removed"]}[RECOMMENDED]
        checks.append(("shift removed: recommendation wins in >= 90 % of resplits where any method gains",
                       rrec["wins_where_any"], rrec["wins_where_any"] >= 0.9))
    print(f"\ntargets on {name}:")
    for what, value, ok in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {what}: {value:+.3f}")


SCHEMES = ("shift kept", "shift removed", "grouped resplit")


def report(name: str, results: dict[str, list[dict]], metric: str) -> None:
    """Every scheme's table and the targets, from per-resample results."""
    tables = {}
    for scheme, res in results.items():
        tables[scheme], _ = summarize(res)
        print_table(f"{name}, {scheme} ({metric}; gain = test minus the best single model's test)", tables[scheme])
    targets(name, tables, realistic="shift" in name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fixtures", nargs="*", type=Path, help="library fixtures (.npz) written by --save")
    ap.add_argument("--experiment", help="read this MLflow experiment's library (with --save)")
    ap.add_argument("--tracking-uri", default="sqlite:///mlruns.db")
    ap.add_argument("--save", type=Path, help="write the experiment's library to this .npz fixture")
    ap.add_argument("-r", "--resamples", type=int, default=50)
    ap.add_argument("--metric", default="mAP")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--schemes", nargs="+", choices=SCHEMES, default=list(SCHEMES))
    ap.add_argument("--dump", type=Path, help="write each set's per-resample results to DIR/<set>.json")
    ap.add_argument("--from-dump", nargs="+", type=Path, default=[],
                    help="re-apply the rules to saved results (no refitting) and print the tables")
    args = ap.parse_args()
    if args.experiment:
        save_library(args.tracking_uri, args.experiment, args.save or Path(f"benchmarks/fixtures/{args.experiment}.npz"))
        if not args.fixtures:
            return
    for path in args.from_dump:
        saved = json.loads(path.read_text())
        print(f"\n## {path.stem} (rules re-applied to saved results)")
        report(path.stem, {k: [repick(r, saved["metric"]) for r in v] for k, v in saved["results"].items()},
               saved["metric"])
    for path in args.fixtures:
        lib = dict(np.load(path, allow_pickle=False))
        m, nv, c = lib["valid"].shape
        print(f"\n## {path.stem}: {m} members, {nv} valid / {lib['test'].shape[1]} test clips, {c} classes, "
              f"{len(set(lib['groups_valid']))} valid groups; R={args.resamples} per scheme")
        t0 = time.time()
        results = {}
        with ProcessPoolExecutor(args.workers) as pool:
            for scheme in args.schemes:
                jobs = [(*s, args.metric) for s in resamples(lib, scheme, args.resamples, args.seed)]
                results[scheme] = list(pool.map(evaluate, jobs))
                if args.dump:
                    args.dump.mkdir(parents=True, exist_ok=True)
                    (args.dump / f"{path.stem}.json").write_text(json.dumps(
                        {"metric": args.metric, "resamples": args.resamples, "results": results}))
        report(path.stem, results, args.metric)
        print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
