"""Two nodes on loopback, launched with the scale-out page's own command lines: torchrun and Lightning's variables.

Each node is one gloo process (`trainer=ddp_cpu trainer.devices=1 trainer.num_nodes=2`); both
share one run dir and one cache folder, as on a cluster with a shared filesystem. The scale-out page's
CPU lines run verbatim through bash, with MASTER_ADDR/MASTER_PORT (and NODE_RANK/WORLD_SIZE for
Lightning's launcher) set per node, plus overrides for tiny data. Checked: validation, TTA and
snapshot-ensemble metrics equal a single process's on the same weights (13 validation images, so
a padded shard would show), only global rank 0 writes into the run dir, and a run killed on both
nodes mid-epoch resumes with `resume=true` on both.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from tests import documented
from tests.helpers import make_image
from tests.nodes import TINY, free_port, kill, node_env, report, run_nodes, shell_nodes, writes
from lightcycle.ensemble import ensemble_predict, load_snapshots
from lightcycle.tta import evaluate_tta
from lightcycle.evaluation import score_batches
from lightcycle.module import VisionModule
from lightcycle.run import build, config_dir

SCALE_OUT = documented.commands("scale-out.md")
TORCHRUN_CPU = documented.find(("torchrun", "trainer=ddp_cpu"), SCALE_OUT)
LIGHTNING_CPU = documented.find(("lightcycle-train trainer=ddp_cpu trainer.devices=1 trainer.num_nodes=2",), SCALE_OUT)
RUN_DIR = "outputs/run1"  # both lines name it; the tests run in a fresh working directory
DATA = [*TINY, "data=folder", "data.batch_size=4", "data.augment=side_on"]
# SGDR: 2 cycles of 1 epoch, a snapshot at the end of each; TTA with 2 views (seeded per image)
RECIPE = ["schedule=sgdr", "schedule.cycle_len=1", "schedule.cycle_mult=1", "schedule.n_cycles=2",
          "snapshots.keep=2", "tta.n=2"]


@pytest.fixture
def odd_folder(image_folder: Path) -> Path:
    """36 training images (18 per node: 4 steps of 4), 13 validation images: shards of 7 and 6."""
    make_image(image_folder / "valid" / "red" / "red_extra.jpg", 0, np.random.default_rng(7))
    return image_folder


def _launch(line: str, extra: list[str], cwd: Path, logs: Path, envs: list[dict[str, str]]) -> list:
    return shell_nodes(f"{line} {' '.join(shlex.quote(a) for a in extra)}", cwd, logs, envs)


def _envs(tmp_path: Path, audit: Path, lightning: bool, caches: list[Path] | None = None) -> list[dict[str, str]]:
    """Both nodes' environments: loopback meeting point, one shared cache unless `caches` gives one per node."""
    caches = caches or [tmp_path / "cache"] * 2
    port = str(free_port())
    envs = []
    for rank in range(2):
        extra = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "LIGHTCYCLE_CACHE": str(caches[rank])}
        if lightning:
            extra.update(NODE_RANK=str(rank), WORLD_SIZE="2")
        envs.append(node_env(extra, audit=audit, watch=[tmp_path / "work", *set(caches)]))
    return envs


def single_process_metrics(run_dir: Path, overrides: list[str]) -> dict[str, float]:
    """Validation, TTA and snapshot-ensemble metrics of the run's final weights, in this one process."""
    with initialize_config_dir(config_dir(), version_base=None):
        cfg = compose("train", overrides=overrides)
    dm = build(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    model = VisionModule.load(run_dir / "checkpoints" / "last.ckpt")
    model.configure_model()  # channels_last, as inside the Trainer
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=run_dir.parent / "single")
    metrics = {k: float(v) for k, v in trainer.validate(model, datamodule=dm, verbose=False)[0].items()}
    model.eval()
    metrics.update(evaluate_tta(model, model.task, dm, n=cfg.tta.n, merge=cfg.tta.merge, beta=cfg.tta.beta,
                                views=cfg.tta.views, seed=cfg.tta.seed))
    snapshots = load_snapshots(run_dir / "checkpoints")
    for m in snapshots:
        m.configure_model()
    with torch.no_grad():
        batches = ((ensemble_predict(snapshots, dm.batch_transform(x)), y) for x, y, *_ in dm.val_dataloader())
        metrics.update(score_batches(model.task, batches, "ensemble"))
    return metrics


def assert_equal_to_single_process(run_dir: Path, overrides: list[str]) -> dict[str, float]:
    two = json.loads((run_dir / "metrics.json").read_text())
    one = single_process_metrics(run_dir, overrides)
    assert {"val_loss", "val_accuracy", "tta_loss", "tta_accuracy", "ensemble_loss", "ensemble_accuracy"} <= set(two)
    for key in two:
        assert two[key] == pytest.approx(one[key], abs=1e-5), key
    for key in ("val_accuracy", "tta_accuracy", "ensemble_accuracy"):  # 13 images, each counted once
        assert round(two[key] * 13, 4) == pytest.approx(round(two[key] * 13)), key
    return two


def assert_only_rank_zero_wrote(audit: Path, run_dir: Path) -> set[str]:
    """No process but global rank 0 created, changed or removed a file in the run dir; what rank 0 wrote."""
    inside = [r for r in writes(audit) if Path(r["path"]).is_relative_to(run_dir.resolve()) and r["event"] != "os.mkdir"]
    others = sorted({(r["global_rank"], r["event"], r["path"]) for r in inside if r["global_rank"] != 0}, key=str)
    assert not others, f"processes other than global rank 0 wrote into the run dir: {others[:10]}"
    return {str(Path(r["path"]).relative_to(run_dir.resolve())) for r in inside}


def assert_shared_cache_files_written_whole(audit: Path, cache: Path) -> list[dict]:
    """The cache files any process may rewrite (the verified-files list, bad-items lists) are only ever
    written under a temp name of their writer and renamed into place: a reader sees the old or the new
    file, never half of one. Returns those writes."""
    shared = [r for r in writes(audit) if any(Path(r["path"]).is_relative_to((cache / d).resolve())
                                               for d in ("verified", "reports"))]
    opened = {Path(r["path"]).name for r in shared if r["event"] == "open"}
    assert all(n.startswith(".") and n.endswith(".partial") for n in opened), opened
    return shared


@pytest.mark.slow
def test_torchrun_two_nodes_equal_one_process_and_only_rank_zero_writes(odd_folder, tmp_path):
    work, audit, cache = tmp_path / "work", tmp_path / "audit", tmp_path / "cache"
    work.mkdir()
    (odd_folder / "train" / "red" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")  # skipped, listed
    overrides = [*DATA, f"data.root={odd_folder}", "data.on_bad=skip", *RECIPE]
    nodes = _launch(TORCHRUN_CPU, overrides, work, tmp_path / "logs", _envs(tmp_path, audit, lightning=False))
    run_nodes(nodes, timeout=300)
    run_dir = work / RUN_DIR
    assert_equal_to_single_process(run_dir, overrides)
    written = assert_only_rank_zero_wrote(audit, run_dir)
    for expected in ("metrics.json", "checkpoints/last.ckpt", "checkpoints/snapshot-cycle2.ckpt", ".hydra/config.yaml",
                     "train.log", "interpret/confusion_matrix.png", "bad_items.csv"):
        assert expected in written and (run_dir / expected).is_file(), (expected, sorted(written))
    assert any(w.startswith("tensorboard/events.out.tfevents.") for w in written)
    assert "truncated.jpg" in (run_dir / "bad_items.csv").read_text()
    log = (run_dir / "train.log").read_text()
    assert log.count("final metrics") == 1 and log.count("training and 13 validation images") == 1  # one narrator
    # Both nodes checked the images and recorded the good ones in the one shared verified-files list
    # (the files are older than its 2 s settling time by then): whole, with no bad file in it.
    assert assert_shared_cache_files_written_whole(audit, cache)
    (listing,) = (cache / "verified").glob("*.json")
    good = {str(p.relative_to(odd_folder)) for p in odd_folder.rglob("*.jpg") if p.name != "truncated.jpg"}
    assert set(json.loads(listing.read_text())["files"]) == good and len(good) == 49
    assert not list(cache.rglob("*.partial"))


@pytest.mark.slow
def test_lightning_variables_two_nodes_killed_mid_epoch_resume_on_both(odd_folder, tmp_path):
    work, audit, marker = tmp_path / "work", tmp_path / "audit", tmp_path / "paused"
    work.mkdir()
    overrides = [*DATA, f"data.root={odd_folder}", *RECIPE, "checkpoint_every_n_steps=1", "interpret.top_k=0"]
    pause = ["+callbacks.killpoint._target_=tests.killpoint.PauseOnce", "+callbacks.killpoint.step=6",
             f"+callbacks.killpoint.marker={marker}"]  # step 6 of 8: the middle of the second epoch
    run_dir = work / RUN_DIR
    nodes = _launch(LIGHTNING_CPU, [*overrides, *pause], work, tmp_path / "logs1", _envs(tmp_path, audit, lightning=True))
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert all(n.proc.poll() is None for n in nodes), "a node ended before step 6:\n" + report(nodes)
            assert time.monotonic() < deadline, "the nodes did not reach step 6:\n" + report(nodes)
            time.sleep(0.1)
    finally:
        kill(nodes)  # SIGKILL both nodes, as a scheduler's preemption would
    assert not (run_dir / "metrics.json").exists()
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    assert (run_dir / "checkpoints" / "snapshot-cycle1.ckpt").is_file()

    nodes = _launch(LIGHTNING_CPU, [*overrides, *pause, "resume=true"], work, tmp_path / "logs2",
                    _envs(tmp_path, audit, lightning=True))
    run_nodes(nodes, timeout=300)
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 8
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("snapshot-*.ckpt")) == [
        "snapshot-cycle1.ckpt", "snapshot-cycle2.ckpt"]
    assert not list((run_dir / "checkpoints").glob(".*.partial"))
    assert_equal_to_single_process(run_dir, overrides)
    assert_only_rank_zero_wrote(audit, run_dir)


def _slurm_task_env(tmp_path: Path, audit: Path, procid: int, job_id: str, cache: Path) -> dict[str, str]:
    """What `srun` sets for one of 2 tasks on 2 nodes (one task per node); the first node is 127.0.0.1."""
    slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2", "SLURM_PROCID": str(procid),
             "SLURM_LOCALID": "0", "SLURM_NODEID": str(procid), "SLURM_JOB_ID": job_id, "SLURM_JOB_NAME": "train",
             "SLURM_NODELIST": "127.0.0.1", "LIGHTCYCLE_CACHE": str(cache)}
    return node_env(slurm, audit=audit, watch=[tmp_path / "work", cache])


def _free_slurm_job_id() -> str:
    """A job id whose port (Lightning's SLURM environment: 15000 + its last 4 digits) is free here."""
    import socket

    for _ in range(200):
        job_id = str(np.random.default_rng().integers(1000, 9999))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 15000 + int(job_id)))
                return job_id
            except OSError:
                continue
    pytest.skip("no free port for a simulated SLURM job")


@pytest.mark.slow
def test_two_slurm_tasks_on_one_fresh_shared_cache_build_demo_data_and_features_once(tmp_path):
    """srun's variables (no MASTER_ADDR/PORT: Lightning's SLURM environment derives them), the demo data
    and precompute's cache built on the fly in one empty $LIGHTCYCLE_CACHE that both nodes share."""
    work, audit, cache = tmp_path / "work", tmp_path / "audit", tmp_path / "cache"
    work.mkdir()
    srun = documented.find(("srun lightcycle-train", "slurm-$SLURM_JOB_ID"), SCALE_OUT)
    line = srun.removeprefix("srun ").replace("trainer=ddp trainer.devices=4", "trainer=ddp_cpu trainer.devices=1")
    extra = [*TINY, "data=demo_classification", "precompute=true", "trainer.max_epochs=1", "interpret.top_k=0"]
    job_id = _free_slurm_job_id()
    envs = [_slurm_task_env(tmp_path, audit, procid, job_id, cache) for procid in range(2)]
    nodes = _launch(line, extra, work, tmp_path / "logs", envs)
    run_nodes(nodes, timeout=420)
    run_dir = work / f"outputs/slurm-{job_id}"
    assert {"val_loss", "val_accuracy"} <= set(json.loads((run_dir / "metrics.json").read_text()))
    assert_only_rank_zero_wrote(audit, run_dir)
    records = [r for r in writes(audit) if r["event"] != "os.mkdir" and not r["path"].endswith(".lock")]
    for kind in ("demo", "precompute"):
        builders = {r["pid"] for r in records if Path(r["path"]).is_relative_to((cache / kind).resolve())}
        assert len(builders) == 1, (kind, builders)  # one writer; the other node waited and read
    precompute_writers = {r["global_rank"] for r in records if Path(r["path"]).is_relative_to((cache / "precompute").resolve())}
    assert precompute_writers == {0}
    for kind in ("demo", "precompute"):  # published folders only: no lock, no temp folder left behind
        assert not [p.name for p in (cache / kind).iterdir() if p.name.startswith(".")]
    # the verified-files list (of the files older than 2 s when checked): any node may update it, always
    # whole, through a unique temp file and a rename, so a reader never sees half of it
    assert_shared_cache_files_written_whole(audit, cache)
    for listing in (cache / "verified").glob("*.json"):
        assert set(json.loads(listing.read_text())["files"]) <= {str(p.relative_to(cache / "demo" / "classification-v1-seed0"))
                                                               for p in (cache / "demo").rglob("*.jpg")}


@pytest.mark.slow
def test_node_local_caches_each_node_computes_its_own_features(image_folder, tmp_path):
    """A different $LIGHTCYCLE_CACHE per machine: the node that cannot see rank 0's copy computes its own."""
    work, audit = tmp_path / "work", tmp_path / "audit"
    work.mkdir()
    caches = [tmp_path / "cache-node0", tmp_path / "cache-node1"]
    extra = [*DATA, f"data.root={image_folder}", "precompute=true", "trainer.max_epochs=1", "interpret.top_k=0"]
    nodes = _launch(LIGHTNING_CPU, extra, work, tmp_path / "logs", _envs(tmp_path, audit, lightning=True, caches=caches))
    run_nodes(nodes, timeout=300)
    assert {"val_loss", "val_accuracy"} <= set(json.loads((work / RUN_DIR / "metrics.json").read_text()))
    records = [r for r in writes(audit) if r["event"] != "os.mkdir" and not r["path"].endswith(".lock")]
    for rank, cache in enumerate(caches):
        folders = [p for p in (cache / "precompute").iterdir()]
        assert len(folders) == 1 and (folders[0] / "done").is_file(), folders
        writers = {r["global_rank"] for r in records if Path(r["path"]).is_relative_to(cache.resolve())}
        assert writers == {rank}, (cache, writers)
