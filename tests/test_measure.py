"""Measurement helpers pinned against values computed another way: the CPU thread set-up, the LM speed
figures (against models whose every call takes a known time), and the Pareto front the plots mark."""

import time
import weakref

import pytest
import torch

from hfcompress import runtime
from hfcompress.evaluation.lm import interleaved_speeds
from hfcompress.evaluation.plots import pareto_front, plot_tradeoffs


@pytest.fixture
def restore_threads(monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # configure_cpu_threads sets it; monkeypatch undoes it
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("cores,local,override,expected", [(8, 1, None, 8), (8, 2, None, 4), (3, 2, None, 1),
                                                             (1, 4, None, 1), (8, 2, "3", 3)])  # fmt: skip
def test_threads_are_this_process_share_of_the_physical_cores(monkeypatch, restore_threads, cores, local,
                                                               override, expected):  # fmt: skip
    monkeypatch.setattr(runtime, "accelerator_available", lambda: False)
    monkeypatch.setattr(runtime, "physical_cores", lambda: cores)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
    if override:
        monkeypatch.setenv(runtime.THREADS_ENV, override)
    else:
        monkeypatch.delenv(runtime.THREADS_ENV, raising=False)
    assert runtime.configure_cpu_threads() == expected
    assert torch.get_num_threads() == expected
    import os

    assert os.environ["OMP_NUM_THREADS"] == str(expected)  # inherited by the processes the run starts


def test_threads_are_left_alone_with_an_accelerator(monkeypatch, restore_threads):
    monkeypatch.setattr(runtime, "accelerator_available", lambda: True)
    before = torch.get_num_threads()
    assert runtime.configure_cpu_threads() is None and torch.get_num_threads() == before


class Timed(torch.nn.Module):
    """A 'language model' whose generate takes ``generate_s`` and whose forward takes ``forward_s``."""

    def __init__(self, generate_s: float, forward_s: float):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.generate_s, self.forward_s = generate_s, forward_s

    def forward(self, input_ids, attention_mask=None):
        time.sleep(self.forward_s)

    def generate(self, input_ids, max_new_tokens, **kwargs):
        time.sleep(self.generate_s)
        return torch.cat([input_ids, input_ids[:, :max_new_tokens]], dim=1)


class Pad:
    pad_token_id, eos_token_id = 0, 0


def test_lm_speeds_are_tokens_over_the_measured_time():
    fast, slow = Timed(0.02, 0.01), Timed(0.08, 0.04)
    rows = interleaved_speeds([fast, slow], Pad(), list(range(4 * 40)), window=40, generate_tokens=16,
                              prompt_batch_size=4, runs=3)  # fmt: skip
    # 16 new tokens in 0.02 s = 800 tokens/s; a 4 x 40 prompt in 0.01 s = 16,000 tokens/s (sleep overshoots a bit)
    assert rows[0]["generate_tokens_per_s_b1"] == pytest.approx(800, rel=0.25)
    assert rows[1]["generate_tokens_per_s_b1"] == pytest.approx(200, rel=0.25)
    assert rows[0]["prompt_tokens_per_s"] == pytest.approx(16_000, rel=0.3)
    assert rows[1]["prompt_tokens_per_s"] == pytest.approx(4_000, rel=0.3)


class Varying(Timed):
    """A model whose generate takes ``times`` in turn: the spread over rounds is known."""

    def __init__(self, times):
        super().__init__(0.0, 0.001)
        self.times = list(times)

    def generate(self, input_ids, max_new_tokens, **kwargs):
        self.generate_s = self.times.pop(0)
        return super().generate(input_ids, max_new_tokens)


def test_each_speed_records_its_spread_and_reloaded_models_are_held_one_at_a_time():
    # warm-up 0.01 s, then rounds of 0.02, 0.04, 0.02 s: 800, 400, 800 tokens/s -> median 800, spread 0.5
    steady = Varying([0.01, 0.02, 0.04, 0.02])
    (row,) = interleaved_speeds([steady], Pad(), list(range(4 * 40)), window=40, generate_tokens=16,
                                prompt_batch_size=4, runs=3)  # fmt: skip
    assert row["generate_spread"] == pytest.approx(0.5, rel=0.2) and len(row["generate_tokens_per_s_rounds"]) == 3
    assert row["device"] == "cpu"
    alive, loads = [], []

    def loader(seconds):
        def load():
            assert not alive, "a reloaded model was loaded while another one was held"
            model = Timed(seconds, 0.001)
            alive.append(1)
            loads.append(seconds)
            weakref.finalize(model, alive.pop)
            return model

        return load

    rows = interleaved_speeds([loader(0.02), loader(0.08)], Pad(), list(range(4 * 40)), window=40,
                              generate_tokens=16, prompt_batch_size=4, runs=2, reload=True)  # fmt: skip
    assert loads == [0.02, 0.08, 0.02, 0.08]  # each loaded for its turn, the turns interleaved
    assert rows[0]["generate_tokens_per_s_b1"] == pytest.approx(800, rel=0.25)
    assert rows[1]["generate_tokens_per_s_b1"] == pytest.approx(200, rel=0.25)


ROWS = [
    {"model": "teacher", "latency_ms_b32": 100.0, "size_mb": 80.0, "test_accuracy": 0.90},
    {"model": "student", "latency_ms_b32": 50.0, "size_mb": 60.0, "test_accuracy": 0.88},
    {"model": "worse", "latency_ms_b32": 60.0, "size_mb": 70.0, "test_accuracy": 0.85},  # beaten by student
    {"model": "int8", "latency_ms_b32": 20.0, "size_mb": 15.0, "test_accuracy": 0.88},  # beats student too
    {"model": "tiny", "latency_ms_b32": 5.0, "size_mb": 5.0, "test_accuracy": 0.60},
    {"model": "unmeasured", "latency_ms_b32": None, "size_mb": 1.0, "test_accuracy": 0.50},
]


def test_pareto_front_keeps_exactly_the_undominated_rows():
    assert pareto_front(ROWS, "latency_ms_b32", "test_accuracy") == [0, 3, 4]
    assert pareto_front(ROWS, "size_mb", "test_accuracy") == [0, 3, 4, 5]
    tie = [{"c": 1.0, "s": 0.5}, {"c": 1.0, "s": 0.5}]  # equal rows don't dominate each other
    assert pareto_front(tie, "c", "s") == [0, 1]


def test_plots_are_written_as_png_with_every_measured_row(tmp_path):
    pytest.importorskip("matplotlib")
    paths = plot_tradeoffs(ROWS, tmp_path, batch_size=32)
    assert [p.name for p in paths] == ["accuracy_vs_latency.png", "accuracy_vs_size.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
