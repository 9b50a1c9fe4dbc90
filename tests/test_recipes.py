"""Training recipes: each paper's settings by default, the compact CPU one by name, recorded in every run."""

from __future__ import annotations

import json

import pytest

import models
import training.experiment
from training.cli import main
from training.compare import compare_table
from training.recipes import NOT_IN_PAPER, RECIPES, label, recipe_for, resolve


@pytest.mark.parametrize(
    "model, train, options",
    [
        ("hbaf", dict(lr=1e-4, weight_decay=3e-4, batch_size=32, patience=15), {}),
        ("bcaf", dict(lr=1e-4, weight_decay=1e-4, patience=15), {"dropout": 0.3}),
        ("gca", dict(lr=1e-5, batch_size=2, max_epochs=50), {}),
        ("mcfn", dict(lr=1e-4, batch_size=32), {}),
    ],
)
def test_paper_recipe_is_each_papers_settings(model, train, options):
    settings, opts, record = resolve("paper", model, {}, {})
    assert {k: settings[k] for k in train} == train and opts == options
    assert record == {"name": "paper", "source": recipe_for("paper", model).source, "overridden": []}
    models.build(model, **opts)  # the recipe's model fields exist
    assert set(NOT_IN_PAPER.get(model, ())) <= set(settings)


def test_every_model_has_both_recipes_and_compact_is_the_paired_table():
    for name in RECIPES:
        assert set(RECIPES[name]) == set(models.MODEL_NAMES)
    settings, opts, _ = resolve("compact", "hbaf", {}, {})
    assert settings == dict(max_epochs=40, batch_size=32, lr=5e-4, weight_decay=3e-4, patience=6)
    assert opts["d_model"] == 128 and opts["lstm_hidden"] == 64
    for model in models.MODEL_NAMES:
        models.build(model, **resolve("compact", model, {}, {})[1])


def test_explicit_settings_win_and_are_named():
    settings, opts, record = resolve(
        "compact", "gca", {"lr": 1e-3, "patience": None, "batch_size": 32}, {"d_model": 64}
    )
    assert settings["lr"] == 1e-3 and settings["patience"] == 6 and opts["d_model"] == 64
    assert record["overridden"] == ["d_model", "lr"]  # batch_size 32 is the recipe's own value
    assert label(record) == "compact+d_model,lr" and label(None) == "unrecorded"
    with pytest.raises(ValueError, match="unknown recipe"):
        resolve("fast", "gca", {}, {})


def test_cli_trains_with_the_recipe_and_records_it(monkeypatch):
    seen = []

    def fake_run(cfg, resume=False):
        seen.append(cfg)
        return {"validation": {"weighted_f1": 0.5, "accuracy": 0.5}, "best_epoch": 0, "seconds": 0.0}

    monkeypatch.setattr(training.experiment, "run", fake_run)
    assert main(["train", "--model", "gca", "--quiet", "--seeds", "0"]) == 0
    assert main(["train", "--model", "gca", "--recipe", "compact", "--epochs", "3", "--quiet"]) == 0
    paper, compact = seen
    assert (paper.train.lr, paper.train.batch_size, paper.recipe["name"]) == (1e-5, 2, "paper")
    assert (compact.train.lr, compact.train.max_epochs, compact.model_options["d_model"]) == (5e-4, 3, 128)
    assert compact.recipe["overridden"] == ["max_epochs"]


def test_compare_names_the_recipe_and_keeps_recipes_apart(tmp_path):
    metrics = {"validation": {k: 0.5 for k in ("weighted_f1", "accuracy", "macro_f1", "unweighted_accuracy", "ece")}}
    for run, recipe in (("gca-s0", {"name": "paper"}), ("gca-s1", {"name": "paper"}), ("gca-s2", None)):
        (tmp_path / run).mkdir()
        m = {**metrics, "run": run, **({"recipe": recipe} if recipe else {})}
        (tmp_path / run / "metrics.json").write_text(json.dumps(m))
    table = compare_table(sorted(tmp_path.iterdir()))
    assert "| recipe |" in table.splitlines()[0]
    assert "| gca | 2 |" in table and table.count("| gca |") == 2
    assert "| paper |" in table and "| unrecorded |" in table
