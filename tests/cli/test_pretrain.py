"""nnssl_pretrain as users type it: bad input, lock refusal, kill -9 + --c, 2-process gloo DDP."""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nnssl.cli.pretrain import main
from nnssl.training.checkpoint import CHECKPOINT_FINAL, CHECKPOINT_LATEST, load_checkpoint
from nnssl.training.lock import LOCK_FILE

REPO = Path(__file__).resolve().parents[2]
RUN = "Dataset990_TinyBody/mae__vit_tiny__nnsslPlans"
TINY = ["-d", "990", "-e", "vit_tiny", "--device", "cpu", "--batch-size", "1", "--iters-per-epoch", "2",
        "--warmup-epochs", "0", "-np", "0"]


@pytest.fixture
def tiny_preprocessed(nnssl_env: dict[str, Path]) -> Path:
    spec = importlib.util.spec_from_file_location("nnssl_tests_tiny_data", REPO / "tests" / "training" / "tiny_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_tiny_preprocessed(nnssl_env["nnssl_preprocessed"])


def _fails(args: list[str], capsys: pytest.CaptureFixture, *fragments: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.split("\r")[-1]  # a tqdm bar may precede an error raised during the first step
    assert err.startswith("nnssl: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_no_preprocessed_data_names_the_command(nnssl_env: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    _fails(["-d", "500", "--device", "cpu"], capsys, "nnssl_plan_and_preprocess -d 500")


def test_plans_without_cases(tiny_preprocessed: Path, capsys: pytest.CaptureFixture) -> None:
    for path in (tiny_preprocessed / "nnsslPlans_3d").iterdir():
        path.unlink()
    _fails(TINY, capsys, "nnsslPlans_3d", "nnssl_plan_and_preprocess")


@pytest.mark.parametrize(("extra", "fragments"), [
    (["-m", "maee"], ("unknown method 'maee'", "did you mean 'mae'")),
    (["-e", "vit_tiyn"], ("unknown encoder 'vit_tiyn'", "did you mean 'vit_tiny'")),
    (["-e", "swin_tiny"], ("'mae'", "'swin_tiny'", "visible tokens")),
    (["--patch-size", "30", "32", "32"], ("patch size (30, 32, 32)", "nearest valid sizes", "(32, 32, 32)")),
    (["--warmup-epochs", "9", "--epochs", "3"], ("warmup_epochs",)),
    (["--method-kwargs", "mask_ratio"], ("key=value",)),
    (["--method-kwargs", "mask_ratio=1.5"], ("mask ratio 1.5",)),
])
def test_bad_options(tiny_preprocessed: Path, capsys: pytest.CaptureFixture, extra: list[str],
                     fragments: tuple[str, ...]) -> None:
    # the "-e swin_tiny" case must replace TINY's encoder, so later options win (argparse keeps the last)
    _fails([*TINY, *extra], capsys, *fragments)


def test_continue_rules(tiny_preprocessed: Path, nnssl_env: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    _fails([*TINY, "--c"], capsys, "nothing to continue")
    assert main([*TINY, "--epochs", "1"]) == 0
    _fails([*TINY, "--epochs", "1"], capsys, "already holds a run", "--c")
    _fails([*TINY, "--c", "--lr", "0.5"], capsys, "cannot change ['lr']")
    capsys.readouterr()
    assert main([*TINY, "--c"]) == 0  # finished: says so, exit 0
    assert "already finished" in capsys.readouterr().out
    assert main(["-d", "990", "-e", "vit_tiny", "--c", "--epochs", "2"]) == 0  # extend a finished run
    assert load_checkpoint(nnssl_env["nnssl_results"] / RUN / CHECKPOINT_FINAL)["epoch"] == 2


def test_second_run_on_a_locked_folder_refuses(tiny_preprocessed: Path, nnssl_env: dict[str, Path],
                                               capsys: pytest.CaptureFixture) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder = nnssl_env["nnssl_results"] / RUN
        folder.mkdir(parents=True)
        import socket
        (folder / LOCK_FILE).write_text(f"{holder.pid} {socket.gethostname()}\n")
        _fails([*TINY, "--epochs", "1"], capsys, f"another nnssl_pretrain (pid {holder.pid})", LOCK_FILE)
        assert not (folder / CHECKPOINT_LATEST).exists()
    finally:
        holder.kill()
        holder.wait()
    assert main([*TINY, "--epochs", "1"]) == 0  # the holder is dead: the stale lock is taken over


def test_help_lists_registered_names() -> None:
    out = subprocess.run([sys.executable, "-m", "nnssl.cli.pretrain", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "registered methods: dae, mae, simmim, swin_ssl" in out
    assert "vit_tiny" in out and "primus_s" in out and "global batch size" in out


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.mark.slow
def test_kill_9_then_continue_loses_no_finished_epoch(tiny_preprocessed: Path, nnssl_env: dict[str, Path]) -> None:
    folder = nnssl_env["nnssl_results"] / RUN
    cmd = [sys.executable, "-m", "nnssl.cli.pretrain", *TINY, "--epochs", "30", "--iters-per-epoch", "3"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    saved = 0
    while time.time() < deadline and proc.poll() is None:
        if (folder / CHECKPOINT_LATEST).is_file():
            saved = load_checkpoint(folder / CHECKPOINT_LATEST)["epoch"]
            if saved >= 2:
                break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = load_checkpoint(folder / CHECKPOINT_LATEST)
    assert before["epoch"] >= saved >= 2 and (folder / LOCK_FILE).exists()  # the killed run left its lock
    steps_done = len(before["history"]["step_loss"])
    finish = subprocess.run([sys.executable, "-m", "nnssl.cli.pretrain", "-d", "990", "-e", "vit_tiny", "--c",
                             "--epochs", str(before["epoch"] + 1)], env=_env(), capture_output=True, text=True)
    assert finish.returncode == 0, finish.stderr[-2000:]
    assert "stale lock" in finish.stderr
    final = load_checkpoint(folder / CHECKPOINT_FINAL)
    assert final["epoch"] == before["epoch"] + 1
    assert final["history"]["step_loss"][:steps_done] == before["history"]["step_loss"]
    assert len(final["history"]["epoch_loss"]) == before["epoch"] + 1
    assert not (folder / LOCK_FILE).exists()


@pytest.mark.slow
def test_ddp_two_process_gloo_smoke(tiny_preprocessed: Path, nnssl_env: dict[str, Path]) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "nnssl.cli.pretrain", *TINY, "--epochs", "2"]
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = nnssl_env["nnssl_results"] / RUN
    log = (folder / "training_log.txt").read_text()
    assert "2 process(es); global batch 2 = batch 1 x 2 x accumulate 1" in log
    assert log.count("epoch 1:") == 1, "only rank 0 logs"
    final = load_checkpoint(folder / CHECKPOINT_FINAL)
    assert final["epoch"] == 2 and len(final["history"]["step_loss"]) == 4
    assert len(final["rng_state"]["per_rank"]) == 2
    assert not any(k.startswith("module.") for k in final["model_state_dict"]), "saved unwrapped, not DDP's keys"
