"""How the pipeline chooses on signal, not noise: the paired bootstrap, the search's within-noise rule, the
shuffled latency turns, and the budget re-checked on the shipped variant."""

import random

import numpy as np
import pytest
import torch

from hfcompress.evaluation import classification_metrics, interleaved_latency
from hfcompress.evaluation.bootstrap import paired_bootstrap, share_below
from hfcompress.pipeline.report import budget_check
from hfcompress.pipeline.spec import Budget
from hfcompress.pipeline.stages.search import SearchConfig
from hfcompress.pipeline.student_search import choose_candidate
from hfcompress.pipeline.tasks import task_kind

N = 1000


def predictions_with_accuracy(correct: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-class logits that are right exactly where ``correct`` is True."""
    predicted = np.where(correct, labels, 1 - labels)
    return np.eye(2, dtype=np.float32)[predicted], labels


@pytest.fixture(scope="module")
def scored():
    """Three candidates on the same 1,000 examples: 'slow' right on 800, 'close' on 798 (it misses two that
    'slow' gets; otherwise the same), 'poor' on 700."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, N)
    order = rng.permutation(N)
    slow = np.zeros(N, bool)
    slow[order[:800]] = True
    close = slow.copy()
    close[order[:2]] = False
    poor = np.zeros(N, bool)
    poor[order[100:800]] = True
    return {name: predictions_with_accuracy(c, labels) for name, c in
            (("slow", slow), ("close", close), ("poor", poor))}  # fmt: skip


def test_paired_bootstrap_standard_error_matches_the_binomial(scored):
    metrics = classification_metrics(["accuracy"], 2)
    draws = paired_bootstrap({"slow": scored["slow"]}, metrics, "accuracy", samples=300, seed=1)
    assert draws["slow"].shape == (300,)
    # a resampled accuracy is a binomial share: s.e. sqrt(p(1-p)/n) = 0.01265 for p = 0.8, n = 1000
    assert draws["slow"].std() == pytest.approx(np.sqrt(0.8 * 0.2 / N), rel=0.15)
    assert draws["slow"].mean() == pytest.approx(0.8, abs=0.003)


def test_paired_bootstrap_draws_the_same_examples_for_every_model(scored):
    metrics = classification_metrics(["accuracy"], 2)
    draws = paired_bootstrap(scored, metrics, "accuracy", samples=100, seed=3)
    # 'close' differs from 'slow' on two examples only, so on every paired draw it is at most 2 points of
    # 1/N per draw of those examples below; unpaired draws would differ by ~0.018 (two s.e.)
    gap = draws["slow"] - draws["close"]
    assert gap.min() >= 0 and gap.max() <= 0.01
    below = share_below("slow", draws)
    assert below["slow"] == 0.0 and below["poor"] == 1.0
    assert below["close"] == pytest.approx(float(np.mean(gap > 0)))
    with pytest.raises(ValueError, match="same examples for every model, got sizes \\[10, 1000\\]"):
        paired_bootstrap({**scored, "short": (scored["slow"][0][:10], scored["slow"][1][:10])}, metrics, "accuracy")


def rows(latencies: dict, scored) -> list[dict]:
    metrics = classification_metrics(["accuracy"], 2)
    return [
        {"candidate": name, "latency_ms": ms, "teacher_layers": [0],
         "validation_accuracy": metrics(scored[name])["accuracy"]}
        for name, ms in latencies.items()
    ]  # fmt: skip


def test_within_noise_picks_the_faster_of_two_tied_candidates(scored):
    metrics = classification_metrics(["accuracy"], 2)
    within = rows({"slow": 100.0, "close": 50.0, "poor": 10.0}, scored)
    config = SearchConfig(bootstrap_samples=200, confidence=0.95)
    chosen, rule = choose_candidate(within, scored, metrics, "accuracy", config)
    assert chosen["candidate"] == "close"  # 0.002 below 'slow' at half its latency; 'poor' is out
    assert "fastest candidate whose validation accuracy" in rule and "within noise of the best (slow, 0.8000)" in rule
    by_name = {r["candidate"]: r for r in within}
    assert by_name["poor"]["within_noise_of_best"] is False and by_name["poor"]["share_below_best"] == 1.0
    assert by_name["close"]["within_noise_of_best"] is True
    assert by_name["slow"]["validation_accuracy_se"] == pytest.approx(0.01265, rel=0.2)
    best, rule = choose_candidate(within, scored, metrics, "accuracy", SearchConfig(selection="best"))
    assert best["candidate"] == "slow" and "the best validation accuracy" in rule


def test_within_noise_keeps_the_best_when_the_faster_one_is_clearly_worse(scored):
    metrics = classification_metrics(["accuracy"], 2)
    within = rows({"slow": 100.0, "poor": 10.0}, scored)
    chosen, _ = choose_candidate(within, {k: scored[k] for k in ("slow", "poor")}, metrics, "accuracy",
                                 SearchConfig())  # fmt: skip
    assert chosen["candidate"] == "slow"


def test_selection_settings_are_checked():
    with pytest.raises(Exception, match="selection must be one of within_noise, best, got 'fastest'"):
        SearchConfig(selection="fastest")
    with pytest.raises(Exception, match=r"confidence must be in \(0.5, 1\), got 1.0"):
        SearchConfig(confidence=1.0)
    with pytest.raises(Exception, match="latency_rounds must be >= 1, got 0"):
        SearchConfig(latency_rounds=0)


class Recorder(torch.nn.Module):
    """A model that records, in a shared list, each call it gets."""

    def __init__(self, name: str, calls: list):
        super().__init__()
        self.name, self.calls = name, calls

    def forward(self, **inputs):
        self.calls.append(self.name)


class Batch(dict):
    def to(self, device):
        return self


def test_interleaved_latency_shuffles_the_turns_every_round():
    calls: list[str] = []
    names = ["teacher", "a", "b", "c"]
    models = {name: Recorder(name, calls) for name in names}
    tokenizer = lambda texts, **kw: Batch(input_ids=torch.zeros(len(texts), 4, dtype=torch.long))  # noqa: E731
    result = interleaved_latency(models, tokenizer, ["x"], 2, 8, rounds=4, runs=2, seed=7)
    assert set(result) == set(names)
    per_call = 3 + 2  # warm-up passes + timed runs of one measurement
    turns = calls[::per_call]
    assert len(turns) == 4 * len(names)
    order, expected = list(names), []
    rng = random.Random(7)
    for _ in range(4):
        rng.shuffle(order)
        expected += order
    assert turns == expected  # each round a fresh shuffle, every model once per round
    assert len({tuple(turns[i : i + 4]) for i in range(0, 16, 4)}) > 1


def test_budget_is_rechecked_on_the_shipped_variant():
    report_rows = [
        {"model": "teacher", "latency_ms_b32": 100.0, "speedup_b32": 1.0, "size_mb": 80.0},
        {"model": "student", "latency_ms_b32": 40.0, "speedup_b32": 2.5, "size_mb": 60.0},
        {"model": "student onnx", "latency_ms_b32": 20.0, "speedup_b32": 5.0, "size_mb": 15.0},
    ]
    search = Budget.of(SearchConfig(min_speedup=3.0, max_size_mb=50.0))
    task = task_kind("single_label_classification")
    check = budget_check(report_rows, "student", search, task)
    assert check["met"] is False
    assert check["failed"] == ["speed-up 2.50x < 3.0x", "size on disk 60.0 MB > 50.0 MB"]
    assert check["budget"] == "speed-up >= 3.0x at batch 32 and fp32 weights <= 50.0 MB"
    assert budget_check(report_rows, "student onnx", search, task)["met"] is True
    assert budget_check(report_rows, None, search, task) is None
    assert budget_check(report_rows, "student", None, task) is None


REPORT_ROWS = [
    {"model": "teacher", "stage": "teacher", "validation_accuracy": 0.80, "latency_ms_b32": 100.0, "size_mb": 80.0},
    {"model": "candidate L2", "stage": "candidate", "validation_accuracy": 0.80, "latency_ms_b32": 10.0,
     "size_mb": 5.0},  # a search proxy: never shipped
    {"model": "student", "stage": "student", "validation_accuracy": 0.795, "latency_ms_b32": 40.0, "size_mb": 60.0},
    {"model": "student onnx", "stage": "quantized", "validation_accuracy": 0.793, "latency_ms_b32": 30.0,
     "size_mb": 15.0},
    {"model": "student int4", "stage": "quantized", "validation_accuracy": 0.791, "latency_ms_b32": 45.0,
     "size_mb": 9.0},
    {"model": "pruned", "stage": "pruned", "validation_accuracy": 0.70, "latency_ms_b32": 20.0, "size_mb": 40.0},
]  # fmt: skip


@pytest.mark.parametrize(
    "min_kept,objective,expected",
    [
        (0.99, "latency", "student onnx"),  # floor 0.792: int4 (0.791) and pruned are out; onnx is the fastest
        (0.99, "size", "student onnx"),  # int4 is smaller but below the floor
        (0.985, "size", "student int4"),  # floor 0.788: int4 is in, and the smallest
        (0.985, "latency", "student onnx"),
        (0.9999, "latency", None),  # nothing keeps 99.99%: the proxy at 100% is not a candidate
    ],
)
def test_the_shipped_variant_rule(min_kept, objective, expected):
    from hfcompress.pipeline.report import choose
    from hfcompress.pipeline.stages.evaluate import EvaluateConfig

    cost = ("latency_ms_b32", "the fastest at batch 32")
    chosen, rule = choose(REPORT_ROWS, EvaluateConfig(min_kept=min_kept, objective=objective), "accuracy", cost)
    assert chosen == expected
    assert f"({min_kept * 0.80:.4f})" in rule
    assert ("the smallest on disk" if objective == "size" else "the fastest at batch 32") in rule


def test_nothing_is_shared_when_no_variant_met_the_rule(tmp_path, caplog):
    from types import SimpleNamespace

    from hfcompress.pipeline.spec import ReportOutput
    from hfcompress.pipeline.stages.share import ShareConfig, run

    report = {"chosen": None, "rule": "among compressed variants ...", "results": REPORT_ROWS, "stages": []}
    ctx = SimpleNamespace(outputs={"evaluate": ReportOutput(report)})
    stage = SimpleNamespace(get=lambda cls: ShareConfig(share_export_dir=str(tmp_path / "shipped")))
    figures, artifact = run(ctx, stage, tmp_path / "share")
    assert figures == {"shared": None, "reason": "no variant met the rule"} and artifact is None
    assert not (tmp_path / "shipped").exists()
    assert "no variant met the rule" in caplog.text


LM_ROWS = [
    {"model": "teacher", "stage": "teacher", "validation_perplexity": 20.0, "generate_ms_per_token": 30.0, "size_mb": 500.0},
    {"model": "candidate L2", "stage": "candidate", "validation_perplexity": 20.5, "generate_ms_per_token": 5.0,
     "size_mb": 100.0},
    {"model": "student", "stage": "student", "validation_perplexity": 24.0, "generate_ms_per_token": 15.0, "size_mb": 300.0},
    {"model": "student onnx-int8-dynamic", "stage": "quantized", "validation_perplexity": 25.5,
     "generate_ms_per_token": 10.0, "size_mb": 150.0},
    {"model": "student bnb-nf4", "stage": "quantized", "validation_perplexity": 24.9, "generate_ms_per_token": 60.0,
     "size_mb": 90.0},
]  # fmt: skip


@pytest.mark.parametrize(
    "min_kept,objective,expected",
    [
        (0.8, "latency", "student"),  # bound 25.0: onnx (25.5) is out; the proxy is never shipped
        (0.78, "latency", "student onnx-int8-dynamic"),  # bound 25.64: onnx is in and the fastest
        (0.8, "size", "student bnb-nf4"),  # 24.9 <= 25.0, and the smallest
        (0.9, "latency", None),  # bound 22.2: no compressed variant
    ],
)
def test_the_shipped_variant_rule_for_perplexity(min_kept, objective, expected):
    """Lower is better: a variant keeps min_kept when the teacher's perplexity / its own >= min_kept."""
    from hfcompress.pipeline.report import choose
    from hfcompress.pipeline.stages.evaluate import EvaluateConfig

    cost = ("generate_ms_per_token", "the fastest in greedy tokens/s at batch 1")
    config = EvaluateConfig(min_kept=min_kept, objective=objective)
    chosen, rule = choose(LM_ROWS, config, "perplexity", cost, lower=True)
    assert chosen == expected
    assert f"validation perplexity is <= the teacher's / {min_kept:g} ({20.0 / min_kept:.4f})" in rule


def test_search_rule_for_perplexity_prefers_lower_and_reads_noise_on_rows():
    """The search's rule with perplexity: the best is the lowest; a candidate whose per-row losses are the best's
    plus noise is within noise; one that is worse on every row is not."""
    import numpy as np

    from hfcompress.evaluation.lm import perplexity_of
    rng = np.random.default_rng(0)
    tokens = np.full(200, 31)
    best = rng.uniform(60, 80, 200)
    predictions = {
        "deep": (best, tokens),
        "noisy": (best + rng.normal(0, 3, 200), tokens),  # same on average
        "worse": (best + 5.0, tokens),  # worse on every row
    }
    rows = [{"candidate": name, "latency_ms": ms, "validation_perplexity": perplexity_of(predictions[name])["perplexity"]}
            for name, ms in (("deep", 30.0), ("noisy", 20.0), ("worse", 10.0))]  # fmt: skip
    chosen, rule = choose_candidate(rows, predictions, perplexity_of, "perplexity", SearchConfig(), lower=True)
    by_name = {r["candidate"]: r for r in rows}
    assert by_name["worse"]["share_below_best"] > 0.95 and not by_name["worse"]["within_noise_of_best"]
    assert by_name["noisy"]["within_noise_of_best"]
    assert min(rows, key=lambda r: r["validation_perplexity"])["candidate"] in ("deep", "noisy")
    assert chosen["candidate"] == "noisy"  # the fastest within noise of the best; "worse" is faster but worse
    assert rule.startswith("within the budget (no budget), the fastest candidate whose validation perplexity")
