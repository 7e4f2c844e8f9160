"""Fixtures shared by every test folder.

* :func:`cli`: runs ``learner ...`` in-process through the console-script entry point and returns
  (exit code, stdout, stderr).
* The tiny phantom cohorts (:func:`tiny_lus`, :func:`tiny_mri`; :func:`tiny_mode` holds their sizes): built
  once per session. Under pytest-xdist the first worker to need one builds it in a folder that every worker
  of the session shares (guarded by a file lock) and the others read it.
* :func:`one_thread`: one torch thread for the test (kill tests compare with a child process).
* :func:`host_syncs_forbidden` (:func:`forbid_host_syncs`): raises where a tensor's value or shape would
  wait for a GPU (the CPU check of the device-data step and of device validation).
* :func:`replaying_recorder` and :func:`replaying_recorders`: :class:`ReplayingRecorder`, the CPU stand-in
  for the CUDA graph recorder of ``runtime.cuda_graph``; its replays run under :func:`forbid_host_syncs`.
* The tiny configs, one fixture per meaning: :func:`make_tiny_pretrain_config` (a factory: one pretraining
  run on the tiny LUS cohort, plus dotted overrides) and :func:`tiny_experiment_config` (the settings of an
  experiment grid; its datasets come from the grid).

Under pytest-xdist, :func:`pytest_configure` gives each worker's torch its share of the cores.

The learner imports of the fixtures are inside them, so that collecting a test folder that uses none of
them imports nothing heavy.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

if TYPE_CHECKING:
    from learner.config import Config, DatasetSpec
    from learner.experiments.demo import DemoMode

TINY_LUS: dict[str, Any] = {"patients": (6, 3, 3), "frames": 4, "size": 32}
"""The tiny phantom LUS cohort: 6/3/3 patients, 4 frames of 32 px, seed 0 (~60 scans)."""
TINY_MRI: dict[str, Any] = {"patients": (6, 3, 3), "size": 32}
"""The tiny phantom MRI cohort: 6/3/3 patients, 32³ volumes (split 2:1:1 by the ADNI adapter)."""

TINY_PRETRAIN: dict[str, Any] = {
    "data.frames": 2,
    "data.size": 32,
    "runtime.workers": 0,
    "model.size": "tiny",
    "model.head_hidden": 16,
    "model.dropout": 0.2,  # so that resuming must restore the global torch RNG exactly
    "loss.name": "mse+wcl",
    "optim.batch_size": 4,
    "optim.epochs": 2,
    "optim.max_steps_per_epoch": 2,
    "runtime.device": "cpu",
    "runtime.vector_figures": False,
}
"""2 epochs × 2 steps of 4 clips (2 frames, 32 px) through the tiny TSM: a couple of seconds on CPU; the
training curves as PNG alone (the SVG beside it is tested where it is the subject)."""

TINY_EXPERIMENT: list[str] = [
    "data.frames=2",
    "data.size=32",
    "runtime.workers=0",
    "optim.epochs=1",
    "optim.batch_size=8",
    "optim.max_steps_per_epoch=2",
    "classifier.epochs=15",
    "classifier.patience=5",
    "classifier.bootstrap=30",
    "runtime.vector_figures=false",
]
"""Experiment cells: 1 epoch × 2 steps of 8 clips per encoder, a short pair classifier, 30 bootstraps;
figures as PNG alone (drawing the SVG and PDF copies was about a fifth of a tiny grid's time)."""


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker's torch gets its share of the cores (``OMP_NUM_THREADS``, which
    child processes inherit too), unless the caller set it. Left at torch's default, two workers on two
    cores run four intra-op threads whose spin-waits take turns from each other: the fast lane took 2 min
    47 s on the 2-core AVX2 EPYC, 2 min 30 s with one thread per worker (2026-12-07). Set before any test
    module imports torch, which reads it once."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(workers))))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-long",
        action="store_true",
        help="run the fuzz tests of tests/reliability with thousands of cases instead of a few hundred",
    )


class CliResult(NamedTuple):
    """What one ``learner`` command left: exit code, stdout and stderr."""

    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[[list[str]], CliResult]:
    """``code, out, err = cli(["data", "check", path])``: run ``learner data check PATH`` in-process and
    return its exit code and what it printed (a :class:`CliResult`)."""
    from learner.cli import run

    def invoke(argv: list[str]) -> CliResult:
        capsys.readouterr()  # drop whatever the test printed before
        code = run(argv)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


HOST_WAITS = frozenset(
    {"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim", "unique_consecutive",
     "equal", "is_nonzero"}
)  # fmt: skip
"""The aten ops after which the host must wait for a GPU: a value read (``item``, ``bool``, ``float``,
``int`` and ``f"{t:.2f}"`` all reach ``_local_scalar_dense``) and an output whose shape depends on values
(``nonzero``, ``masked_select``, ``unique``). A CUDA graph cannot record any of them, nor a tensor made
from host data (``torch.tensor([...])``: ``lift_fresh`` of more than a number, a pageable host-to-device
copy; a number, as in ``x[i] = 0``, reaches the kernel as an argument)."""


@contextmanager
def forbid_host_syncs(what: str = "the device-data step") -> Iterator[None]:
    """Inside, an op of :data:`HOST_WAITS`, boolean-mask indexing (which runs ``nonzero``), ``tolist`` /
    ``numpy`` (read below the dispatcher), ``Tensor.cpu`` or ``torch.tensor`` / ``torch.as_tensor`` of host
    data given a ``device`` raises ``AssertionError`` naming the op and ``what``. The last two are copies
    between host and device on a GPU (the host waits for them, and a CUDA graph cannot record them) even for
    one number, but on a CPU they copy nothing, so no op below the dispatcher shows them: they are patched.

    The check runs below Python, as a ``TorchDispatchMode`` sees every aten op (autograd's backward and the
    optimiser's kernels included), so it also finds a sync that a library call makes in C++, which patching
    ``Tensor.item`` would miss. Its GPU counterpart is ``torch.cuda.set_sync_debug_mode("error")``, which
    ``benchmarks/gpu_check.py`` runs on the eager step.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    def refuse(op: object) -> AssertionError:
        return AssertionError(f"a host sync inside {what}: {op}")

    class HostSyncGuard(TorchDispatchMode):
        def __torch_dispatch__(
            self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
        ) -> Any:
            name = func.overloadpacket.__name__
            masks = [
                index
                for index in (args[1] if name in ("index", "index_put", "index_put_") else ())
                if isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)
            ]
            from_host = name == "lift_fresh" and args[0].dim() > 0
            if name in HOST_WAITS or masks or from_host:
                raise refuse(func)
            return func(*args, **(kwargs or {}))

    def read_on_host(name: str) -> Callable[..., None]:
        def refused(tensor: object, *args: object, **kwargs: object) -> None:
            raise refuse(f"Tensor.{name}")

        return refused

    def copied_to_device(make: Callable[..., Any]) -> Callable[..., Any]:
        def checked(data: object, *args: object, **kwargs: object) -> Any:
            if kwargs.get("device") is not None and not isinstance(data, torch.Tensor):
                raise refuse(f"torch.{make.__name__} of host data with device={kwargs['device']}")
            return make(data, *args, **kwargs)

        return checked

    real = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy", "cpu")}
    makers = {name: getattr(torch, name) for name in ("tensor", "as_tensor")}
    for name in real:
        setattr(torch.Tensor, name, read_on_host(name))
    for name, make in makers.items():
        setattr(torch, name, copied_to_device(make))
    try:
        with HostSyncGuard():
            yield
    finally:
        for name, method in real.items():
            setattr(torch.Tensor, name, method)
        for name, make in makers.items():
            setattr(torch, name, make)


class ReplayingRecorder:
    """A CPU stand-in for ``learner.training.step_graph.CudaGraphRecorder``, whose CUDA graph needs a GPU:
    warm-up steps run in place, and a "recording" keeps the step, whose "replay" calls it again on the same
    buffers, under :func:`forbid_host_syncs` (what a CUDA graph's recording refuses). A graphed step then
    computes what its replays would: everything is checked but the recording itself. Counts the warm-ups
    (``warmups``, ``warming_now`` inside one) and keeps the recordings."""

    def __init__(self, device: object = None) -> None:
        self.device, self.warmups, self.warming_now = device, 0, False
        self.recorded: list[Callable[[], None]] = []

    @contextmanager
    def warming(self) -> Iterator[None]:
        self.warmups += 1
        self.warming_now = True
        try:
            yield
        finally:
            self.warming_now = False

    def record(self, step: Callable[[], None]) -> Callable[[], None]:
        self.recorded.append(step)

        def replay() -> None:
            with forbid_host_syncs("a recorded step"):
                step()

        return replay


@pytest.fixture
def host_syncs_forbidden() -> Callable[[str], AbstractContextManager[None]]:
    """:func:`forbid_host_syncs`: ``with host_syncs_forbidden("what runs"): ...``."""
    return forbid_host_syncs


@pytest.fixture
def replaying_recorder() -> ReplayingRecorder:
    """One :class:`ReplayingRecorder`, for a test that graphs a step itself."""
    return ReplayingRecorder()


@pytest.fixture
def replaying_recorders(monkeypatch: pytest.MonkeyPatch) -> Callable[[ModuleType], list[ReplayingRecorder]]:
    """``replaying_recorders(module)``: ``module.CudaGraphRecorder`` made a :class:`ReplayingRecorder` for
    the test; returns the list that every recorder made from then on joins."""

    def patch(module: ModuleType) -> list[ReplayingRecorder]:
        made: list[ReplayingRecorder] = []

        def make(device: object) -> ReplayingRecorder:
            made.append(ReplayingRecorder(device))
            return made[-1]

        monkeypatch.setattr(module, "CudaGraphRecorder", make)
        return made

    return patch


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One torch intra-op thread for the test: what ``OMP_NUM_THREADS=1`` gives a child process (the same
    kernels, so bit-identical numbers across processes), and on a busy machine the fastest for tiny models.
    The variable is set too, so that a command run in-process (which picks its own thread count,
    :func:`learner.training.device.thread_count`) takes one thread as well."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shared by every xdist worker of this session (the per-worker base folder's parent)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def shared_lock(shared_root: Path) -> Callable[[str], AbstractContextManager[None]]:
    """``with shared_lock("tiny-lus"):`` holds ``<shared_root>/tiny-lus.lock`` exclusively, so that one
    xdist worker at a time builds (or reuses) what lives under :func:`shared_root`."""

    @contextmanager
    def hold(name: str) -> Iterator[None]:
        with (shared_root / f"{name}.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    return hold


@pytest.fixture(scope="session")
def tiny_mode() -> DemoMode:
    """The tiny cohorts' sizes as a demo mode (:data:`TINY_LUS`, :data:`TINY_MRI`)."""
    from learner.experiments.demo import DemoMode

    return DemoMode("demo.yaml", lus=TINY_LUS, mri=TINY_MRI)


@pytest.fixture(scope="session")
def tiny_lus(
    shared_root: Path, shared_lock: Callable[[str], AbstractContextManager[None]], tiny_mode: DemoMode
) -> DatasetSpec:
    """The tiny phantom LUS cohort (mp4 clips, S/F scale, its own split column) as the dataset ``LUS``.

    Shared by the whole session: tests may read it and add caches next to it, never change its files.
    """
    from learner.experiments.demo import prepare_lus

    with shared_lock("tiny-lus"):
        return prepare_lus(shared_root / "tiny-cohorts" / "lus", tiny_mode, workers=0)


@pytest.fixture(scope="session")
def tiny_lus_manifest(tiny_lus: DatasetSpec) -> Path:
    """The manifest (csv) of :func:`tiny_lus`."""
    return tiny_lus.manifest


@pytest.fixture
def tiny_lus_with_a_bad_scan(tiny_lus_manifest: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(manifest, bad scan): a copy of :func:`tiny_lus`'s manifest in ``tmp_path`` whose first row points at
    ``trunc.mp4``, 2 KB of random bytes that no reader decodes (the other paths made absolute)."""
    import numpy as np
    import pandas as pd

    frame = pd.read_csv(tiny_lus_manifest)
    frame["path"] = [str(tiny_lus_manifest.parent / path) for path in frame["path"]]
    broken = tmp_path / "trunc.mp4"
    broken.write_bytes(np.random.default_rng(0).bytes(2048))
    frame.loc[0, "path"] = str(broken)
    frame.to_csv(tmp_path / "m.csv", index=False)
    return tmp_path / "m.csv", broken


@pytest.fixture(scope="session")
def tiny_mri(
    shared_root: Path, shared_lock: Callable[[str], AbstractContextManager[None]], tiny_mode: DemoMode
) -> DatasetSpec:
    """The tiny phantom MRI cohort through the ADNI adapter, split 2:1:1 by patient: the dataset ``MRI``."""
    from learner.experiments.demo import prepare_mri

    with shared_lock("tiny-mri"):
        return prepare_mri(shared_root / "tiny-cohorts" / "mri", tiny_mode, workers=0)


@pytest.fixture(scope="session")
def make_tiny_pretrain_config(tiny_lus_manifest: Path) -> Callable[..., Config]:
    """``make_tiny_pretrain_config(**{"optim.epochs": 3})``: :data:`TINY_PRETRAIN` on the tiny LUS cohort,
    plus dotted overrides."""
    from learner.config import Config, apply_overrides

    def make(**overrides: Any) -> Config:
        return apply_overrides(
            Config(), {"data.manifest": str(tiny_lus_manifest), **TINY_PRETRAIN, **overrides}
        )

    return make


@pytest.fixture(scope="session")
def tiny_experiment_config() -> Config:
    """:data:`TINY_EXPERIMENT` on the default config: the settings every cell of a tiny experiment shares."""
    from learner.config import load_config

    return load_config(None, TINY_EXPERIMENT)
