"""The ensemble stage's console tables: the methods with honest beside in-sample scores, and one method's comparison."""

from __future__ import annotations

import pandas as pd
from rich.table import Table

from harmonia.ensembles.honest import ANCHOR, DEFAULT_RULE
from harmonia.ensembles.stage import HONEST_NOTE, EnsembleReport, HonestSetup
from harmonia.progress import console


def print_methods(experiment: str, metric: str, reports: list[EnsembleReport], table: pd.DataFrame,
                  rule: str = DEFAULT_RULE, why: str | None = None) -> None:
    """The methods table (honest beside in-sample), the recommendation and its export command; `why` replaces
    the rule's explanation when something else chose (a budget)."""
    setup = reports[0].setup
    t = Table(title=f"ensemble methods on {experiment} ({metric})",
              caption=f"valid {metric}: honest = {setup.describe()} held-out folds ± s.e., in-sample = fitted on "
                      "all of valid; test only reported")
    for col in ("method", "honest", "in-sample", "test", "members", "run"):
        t.add_column(col, no_wrap=col in ("method", "run"))
    for _, r in table.iterrows():
        t.add_row(r["method"] + (" *" if r["recommended"] else ""), f"{r['honest']:.3f}±{r['honest_se']:.3f}",
                  f"{r['valid_insample']:.3f}", f"{r['test']:.3f}", str(r["members"]), r["run_id"][:8],
                  style="bold green" if r["recommended"] else None)
    console.print(t)
    if rule == "anchored" and "fold_gain" in table and table["fold_gain"].notna().any():
        gains = [f"{r['method']} {r['fold_gain']:+.3f}±{r['fold_gain_se']:.3f}" for _, r in table.iterrows()
                 if r["method"] != ANCHOR and pd.notna(r["fold_gain"])]
        console.print(f"per-fold gain over {ANCHOR} ± corrected s.e.: {', '.join(gains)}")
    if reports[0].extra.get("sed"):
        print_sed(experiment, reports, table)
    lib = reports[0].library
    console.print(f"{HONEST_NOTE}; library: {len(lib.run_ids)} members kept of {lib.n_read or len(lib.run_ids)} read")
    best = table.loc[table["recommended"]].iloc[0]
    console.print(f"* recommended: [bold]{best['method']}[/] ({why or _rule_why(rule, setup, table)})")
    console.print("export it with:")
    console.print(f"harmonia export out/{experiment} --run {best['run_id']}", soft_wrap=True)


def _rule_why(rule: str, setup: HonestSetup, table: pd.DataFrame) -> str:
    """What the rule did, in words, for this library's split and candidates."""
    if rule == "anchored" and ANCHOR not in set(table["method"]):
        return f"the simplest method within one standard error of the best honest score; {ANCHOR} was not fitted"
    if rule == "anchored" and setup.shared_sources:
        return (f"the largest per-fold gain over {ANCHOR}: the split draws test from valid's sources, so there is "
                "no source shift for the robust default to guard against")
    return {"anchored": f"{ANCHOR}, the robust default, unless another ensemble beats it on the same held-out "
                        "folds by more than the corrected standard error of the per-fold differences",
            "one_se": "the simplest method within one standard error of the best honest score",
            "paired_se": "the simplest method within the paired (bootstrap) standard error of the best honest score",
            "best": "the best honest score"}[rule]


def print_comparison(report: EnsembleReport) -> None:
    """One method beside the best single model and the top-k average: honest, in-sample and test scores."""
    scores = [c for c in ("oof", "valid", "test") if c in report.comparison.columns]  # oof: cv_selection
    on = "out-of-fold predictions of train ∪ valid" if "oof" in scores else "valid"
    t = Table(title=f"{report.method} ensemble vs single models ({report.metric}; fitted on {on})")
    labels = {"oof": "in-sample oof", "valid": "in-sample valid", "test": "test"}
    for col in ("model", f"honest valid ({report.setup.describe()})", *(labels[c] for c in scores), "members"):
        t.add_column(col)
    for model, row in report.comparison.iterrows():
        t.add_row(model, f"{row['honest']:.4f} ± {row['honest_se']:.4f}", *(f"{row[c]:.4f}" for c in scores),
                  str(int(row["members"])))
    console.print(t)
    names = dict(zip(report.library.run_ids, report.library.run_names))
    console.print("members: " + ", ".join(f"{names[r]}×{w:.2f}" for r, w in report.members))
    console.print(f"ensemble run: [bold]{report.run_id}[/]")


SED_COLUMNS = {"event F1": "event_f1", "seg F1": "segment_f1", "seg ER": "segment_er", "PSDS1": "psds1",
               "PSDS2": "psds2"}


def print_sed(experiment: str, reports: list[EnsembleReport], table: pd.DataFrame) -> None:
    """Event / segment scores (decisions fitted on valid for event F1) and PSDS of every method beside its mAP
    (the methods table's metric), valid in-sample and test; then the decisions that sit at a grid edge."""
    metric = reports[0].metric
    t = Table(title=f"sound event detection on {experiment}",
              caption="valid*: in-sample (thresholds and median filters fitted on all of valid); valid honest: "
                      "event/segment scores with them fitted on K-1 folds, scored on the held-out fold; test only reported")
    for col in ("method", "split", *SED_COLUMNS, metric):
        t.add_column(col, no_wrap=col == "method")
    rows = table.set_index("method")
    for r in reports:
        for split, label, clip in (("honest_valid", "valid honest", "honest"), ("valid", "valid*", "valid_insample"),
                                   ("test", "test", "test")):
            s = r.extra["sed"]["scores"].get(split)
            if s is not None:
                first = split == next(k for k in ("honest_valid", "valid") if k in r.extra["sed"]["scores"])
                t.add_row(r.method if first else "", label, *(f"{s[k]:.3f}" if k in s else "—"
                          for k in SED_COLUMNS.values()), f"{rows.loc[r.method, clip]:.3f}")
    console.print(t)
    chosen = next((r for r in reports if bool(rows.loc[r.method, "recommended"])), reports[0])
    edges = chosen.extra["sed"]["decisions"].get("at_grid_edge", {})
    if edges:
        console.print(f"{chosen.method}: decisions at a grid edge (the best may lie beyond it): "
                      + "; ".join(f"{c}: {', '.join(v)}" for c, v in edges.items()), soft_wrap=True)


def print_sed_selection(experiment: str, report) -> None:
    """`--metric event_f1|psds1`: the selection beside the best single member and the average, its members,
    the event / segment / PSDS scores with decisions fitted for event F1, and the run."""
    m = report.metric
    t = Table(title=f"selection by {m} on {experiment} (frame outputs)",
              caption=f"valid {m}: honest = selection refitted on K-1 folds, scored on the held-out fold "
                      "(pooled); in-sample = fitted on all of valid; test only reported")
    for col in ("model", "honest", "in-sample", "test", "members"):
        t.add_column(col, no_wrap=col == "model")
    for name, r in report.table.iterrows():
        t.add_row(name, f"{r['honest']:.3f}", f"{r['valid_insample']:.3f}", f"{r['test']:.3f}", str(r["members"]))
    console.print(t)
    scores = report.sed["scores"]
    for split, label in (("honest_valid", "valid (decisions fitted out of fold)"),
                         ("valid", "valid (in-sample decisions)"), ("test", "test")):
        if split in scores:
            console.print(f"ensemble {label}: " + ", ".join(f"{k} {scores[split][v]:.3f}"
                                                           for k, v in SED_COLUMNS.items() if v in scores[split]))
    names = dict(zip(report.library.run_ids, report.library.run_names))
    w = report.selection.weights
    console.print("members: " + ", ".join(f"{names[report.library.run_ids[i]]}×{w[i]:.2f}" for i in w.nonzero()[0]))
    console.print(f"ensemble run: [bold]{report.run_id}[/]")
