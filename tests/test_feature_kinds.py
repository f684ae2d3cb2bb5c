"""features.kind sampled per trial: trials of each kind on their kind's features, and a bundle whose
members use different kinds predicting what the members predicted on their own."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from harmonia import tracking
from harmonia.data.datasets import load_dataset
from tests.conftest import tiny_config

KINDS = ("logmel", "mfcc")


@pytest.fixture(scope="module")
def two_kinds(ray_local, tmp_path_factory):
    from harmonia.search.tuner import run_search

    base = tmp_path_factory.mktemp("kinds")
    cfg = tiny_config(base, name="kinds", num_samples=6, max_epochs=1)
    cfg.features.n_mfcc = 13
    cfg.space = {**cfg.space, "features.kind": list(KINDS)}
    return cfg, run_search(cfg, progress=False)


def test_trials_train_on_the_features_of_their_sampled_kind(two_kinds, tmp_path):
    cfg, result = two_kinds
    c = tracking.client(cfg.tracking.uri)
    exp = c.get_experiment_by_name(cfg.name)
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.KIND_TAG}` = 'trial'")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == cfg.search.num_samples
    seen = set()
    for r in finished:
        kind = r.data.params["features.kind"]
        path = c.download_artifacts(r.info.run_id, "model/config.json", str(tmp_path / r.info.run_id))
        member = json.loads(open(path).read())
        assert member["params"]["features.kind"] == member["feature"]["kind"] == kind
        width = 13 if kind == "mfcc" else 32  # the model was trained on that kind's features
        assert len(member["normalization"]["mean"]) == width
        seen.add(kind)
    assert seen == set(KINDS)
    assert set(result.trials["params"].map(lambda p: p["features.kind"])) == set(KINDS)


def test_bundle_of_members_of_different_kinds_predicts_their_own_test_scores(two_kinds, tmp_path, monkeypatch):
    import harmonia.ensembles.predictor as predictor_module
    from harmonia.ensembles.bundle import export_bundle
    from harmonia.ensembles.predictor import EnsemblePredictor
    from harmonia.ensembles.stage import build_ensemble

    cfg, _ = two_kinds
    # the plain average of every trial (no fallback to the best single): members of both kinds
    report = build_ensemble(cfg.tracking.uri, cfg.name, method="average", k=None, progress=False)
    out = export_bundle(cfg.tracking.uri, report.run_id, tmp_path / "bundle")
    pred = EnsemblePredictor.load(out)
    kinds = {pred.feature_configs[m.feature_key].kind for m in pred.members}
    assert kinds == set(KINDS) and len(pred.feature_configs) == 2 and len(pred.members) > 2

    calls = {"audio": 0, "features": 0}
    real_audio, real_features = predictor_module.load_audio, predictor_module.features_of

    def count(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(predictor_module, "load_audio", count("audio", real_audio))
    monkeypatch.setattr(predictor_module, "features_of", count("features", real_features))
    test = load_dataset(cfg.data.root).split("test")
    paths = list(test["path"])
    scores = pred.predict_files(paths)
    assert calls == {"audio": len(paths), "features": 2 * len(paths)}  # each kind once per file

    lib = report.library
    classes = lib.classes
    order = [lib.test_ids.index(cid) for cid in test["clip_id"]]
    # each member on the bundle's features reproduces its own test predictions from the search...
    feats = [pred.features(p) for p in paths]
    members = pred.member_scores(feats)
    for m in pred.members:
        np.testing.assert_allclose(members[m.index], lib.test[m.index][order], atol=1e-4)
    # ...and the ensemble what the ensemble stage scored on test
    np.testing.assert_allclose(scores[classes].to_numpy(), report.fitted.predict(lib.test)[order], atol=1e-4)
    with pytest.raises(ValueError, match="several feature configs"):
        pred.member_scores([feats[0][next(iter(feats[0]))]])
    assert isinstance(scores, pd.DataFrame) and list(scores["filename"]) == paths
