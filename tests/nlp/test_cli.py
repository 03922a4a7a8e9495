"""`supportbot intents train` and `intents eval` end to end, as the maintainers run them."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

WORDS = ("now", "today", "please", "again", "asap", "team", "x", "y", "soon", "mate", "guys", "folks")
TRAIN = [(f"where is my parcel {w}", "track") for w in WORDS]
TRAIN += [(f"I want a refund {w}", "refund") for w in WORDS]
TRAIN += [(f"tell me a joke about {w}", "out_of_scope") for w in ("cats", "dogs", "cars", "rain", "sun", "tea")]
TEST = [("where is my parcel", "track"), ("refund please", "refund"), ("a joke about birds", "out_of_scope")]


def write(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "category"])
        writer.writerows(rows)
    return path


def supportbot(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supportbot.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env={**os.environ, **(env or {})})


def test_train_then_eval_json(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    trained = supportbot("intents", "train", "--data", str(write(tmp_path / "train.csv", TRAIN)),
                         "--out", str(model_dir), "--epochs", "1", "--tuning-budget", "600")
    assert trained.returncode == 0, trained.stderr
    assert "sentence encoder: minilm-l6-int8-tuned" in trained.stdout  # fine-tuned by default
    meta = json.loads((model_dir / "meta.json").read_text())
    fast = meta["fast_path"]  # said when training chose one
    assert ("words-only fast path" in trained.stdout) == (fast is not None and fast["threshold"] is not None)
    tuned = meta["encoder"]["tuned"]
    assert tuned["epochs"] == 1 and (model_dir / "encoder" / "model_int8.onnx").is_file()
    assert tuned["time_budget_s"] == 600 and tuned["steps"] == tuned["planned_steps"]  # a budget that did not bind
    evaluated = supportbot("intents", "eval", "--model", str(model_dir), "--data",
                           str(write(tmp_path / "test.csv", TEST)), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["n"] == 3
    assert {"accuracy", "macro_f1", "p50_ms", "p99_ms", "per_class"} <= result.keys()
    assert result["per_class"]["track"]["support"] == 1
    assert 0 <= result["accuracy"] <= 1 and result["p99_ms"] >= result["p50_ms"] > 0
    assert set(result["latency_plan"]) == {"words_first", "max_tokens"}  # what this CPU made the model do
    plain = supportbot("intents", "eval", "--model", str(model_dir), "--data", str(tmp_path / "test.csv"))
    assert "accuracy=" in plain.stdout and "macro_f1=" in plain.stdout
    full = supportbot("intents", "eval", "--model", str(model_dir), "--data", str(tmp_path / "test.csv"), "--json",
                      env={"NLP_LATENCY_PLAN": "off"})
    assert json.loads(full.stdout)["latency_plan"] == {"words_first": False, "max_tokens": None}
    wrong = supportbot("intents", "eval", "--model", str(model_dir), "--data", str(tmp_path / "test.csv"),
                       env={"NLP_LATENCY_PLAN": "fastest"})
    assert wrong.returncode == 2 and "NLP_LATENCY_PLAN" in wrong.stderr and "Traceback" not in wrong.stderr


def test_clear_errors_for_bad_files(tmp_path: Path) -> None:
    missing = supportbot("intents", "train", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "m"))
    assert missing.returncode == 2 and "nope.csv" in missing.stderr
    (tmp_path / "bad.csv").write_text("sentence,label\nhi,greeting\n")
    bad = supportbot("intents", "train", "--data", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "m"))
    assert bad.returncode == 2 and "text" in bad.stderr
    no_model = supportbot("intents", "eval", "--model", str(tmp_path), "--data", str(tmp_path / "bad.csv"))
    assert no_model.returncode == 2


def test_train_on_the_shared_encoder_replaces_a_tuned_model(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    (model_dir / "encoder").mkdir(parents=True)  # left by an earlier, fine-tuned model
    trained = supportbot("intents", "train", "--data", str(write(tmp_path / "train.csv", TRAIN)),
                         "--out", str(model_dir), "--encoder", "shared")
    assert trained.returncode == 0, trained.stderr
    assert "sentence encoder: minilm-l6-int8)" in trained.stdout
    assert not (model_dir / "encoder").exists()
    zero = supportbot("intents", "train", "--data", str(tmp_path / "train.csv"), "--out", str(model_dir),
                      "--epochs", "0")
    assert zero.returncode == 2 and "--epochs" in zero.stderr
    recall = supportbot("intents", "train", "--data", str(tmp_path / "train.csv"), "--out", str(model_dir),
                        "--oos-recall", "1.5")
    assert recall.returncode == 2 and "--oos-recall" in recall.stderr
    for seconds in ("-5", "nan", "soon"):
        budget = supportbot("intents", "train", "--data", str(tmp_path / "train.csv"), "--out", str(model_dir),
                            "--tuning-budget", seconds)
        assert budget.returncode == 2 and "--tuning-budget" in budget.stderr, seconds
