"""The training step's switches (autocast dtype, channels-last, cuDNN autotuning, torch.compile) each run on CPU."""

import dataclasses
import shutil

import pytest
import torch
from tiny_run import quick_config
from tiny_run_data import DATASET

from autoseg.errors import ConfigError
from autoseg.training import step_options as S
from autoseg.training.checkpoint import load_checkpoint
from autoseg.training.config import TrainConfig, apply_overrides
from autoseg.training.loader import Batch
from autoseg.training.loop import _next_batch
from autoseg.training.trainer import Trainer, train_fold, trainers

SEEN: list[dict] = []


@trainers.register("test_step_probe")
class ProbeTrainer(Trainer):
    """Records, at every forward of the network, the autocast state and the memory format of input and weights."""

    def build_network(self):
        net = super().build_network()
        inner = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d) and m.in_channels > 1)

        def probe(module, args):  # 1-channel weights look the same in both layouts: probe a later convolution
            w = inner.weight
            SEEN.append(
                {
                    "autocast": torch.is_autocast_enabled("cpu"),
                    "dtype": torch.get_autocast_dtype("cpu"),
                    "weight_cl": w.is_contiguous(memory_format=torch.channels_last_3d) and not w.is_contiguous(),
                    "compiling": torch.compiler.is_compiling(),
                }
            )

        inner.register_forward_pre_hook(probe)
        return net


def run(tiny, fold, **switches):
    ws, plans = tiny
    SEEN.clear()
    shutil.rmtree(ws.run_dir(DATASET, "default", "3d_fullres", "test_step_probe", fold), ignore_errors=True)
    cfg = dataclasses.replace(quick_config(epochs=1, iterations=2), **switches)
    result = train_fold(
        ws, DATASET, plans, "3d_fullres", fold, cfg, device="cpu", num_workers=0, trainer="test_step_probe"
    )
    ckpt = load_checkpoint(result.final_checkpoint)
    assert all(torch.isfinite(torch.tensor(v)).all() for v in ckpt["curves"]["train_loss"])
    return list(SEEN), ckpt


def test_defaults_leave_the_cpu_step_as_it_was(tiny):
    seen, _ = run(tiny, 0)
    assert len(seen) == 3  # two training steps, one validation step
    assert not any(s["autocast"] or s["weight_cl"] or s["compiling"] for s in seen)


def test_bfloat16_autocast_on_cpu(tiny):
    seen, _ = run(tiny, 1, amp_dtype="bfloat16")
    assert all(s["autocast"] and s["dtype"] == torch.bfloat16 for s in seen)
    off, _ = run(tiny, 2, amp_dtype="bfloat16", amp=False)
    assert not any(s["autocast"] for s in off)


def test_channels_last_weights_and_batches(tiny):
    seen, ckpt = run(tiny, 3, channels_last=True)
    assert all(s["weight_cl"] for s in seen)
    batch = Batch(torch.rand(2, 3, 4, 5, 6), [torch.zeros(2, 1, 4, 5, 6, dtype=torch.int64)])
    data, targets, _ = _next_batch(iter([batch]), torch.device("cpu"), torch.channels_last_3d)
    assert data.is_contiguous(memory_format=torch.channels_last_3d) and not data.is_contiguous()
    assert torch.equal(data, batch.data) and torch.equal(targets[0], batch.target[0])


def test_compiled_training_step_keeps_checkpoint_keys(tiny):
    seen, ckpt = run(tiny, 4, compile="aot_eager")  # inductor builds C++ (30 s on 2 cores): the GPU check times it
    assert seen and all(s["compiling"] for s in seen)  # the hook ran inside the traced forward
    _, plain = run(tiny, 0)
    assert set(ckpt["model"]) == set(plain["model"])  # no "_orig_mod." prefix
    with pytest.raises(ConfigError, match="compile backend 'turbo' is unknown; available: .*inductor"):
        S.compiled(torch.nn.Linear(1, 1), "turbo")


def test_settings_are_checked_and_resolved():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert S.autocast_dtype(True, "auto", cpu) is None and S.autocast_dtype(True, "auto", cuda) == torch.float16
    assert S.autocast_dtype(True, "bfloat16", cpu) == torch.bfloat16
    assert S.autocast_dtype(False, "float16", cuda) is None
    assert S.grad_scaler(torch.float16, cpu).is_enabled() and not S.grad_scaler(torch.bfloat16, cpu).is_enabled()
    assert S.memory_format(True, 3) == torch.channels_last_3d and S.memory_format(True, 2) == torch.channels_last
    assert S.memory_format(False, 3) == torch.contiguous_format
    with pytest.raises(ConfigError, match="amp_dtype must be auto, float16 or bfloat16"):
        apply_overrides(TrainConfig(), {"amp_dtype": "fp8"})
    assert apply_overrides(TrainConfig(), {"channels_last": "true", "compile": "inductor"}).compile == "inductor"


def test_cudnn_benchmark_follows_the_setting_on_cuda_only():
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        S.set_cudnn_benchmark(True, torch.device("cpu"), deterministic=False)
        assert torch.backends.cudnn.benchmark is False
        S.set_cudnn_benchmark(True, torch.device("cuda"), deterministic=False)
        assert torch.backends.cudnn.benchmark is True
        S.set_cudnn_benchmark(True, torch.device("cuda"), deterministic=True)
        assert torch.backends.cudnn.benchmark is False
        S.set_cudnn_benchmark(False, torch.device("cuda"), deterministic=False)
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before
