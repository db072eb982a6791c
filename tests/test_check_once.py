"""The image check in a launch of several processes: one process per cache checks and the others read its
answer; two writers of the verified-files list keep each other's entries."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor


from lightcycle.data import verified
from lightcycle.data.check_once import find_bad_images_once
from lightcycle.data.verified import VerifiedFiles
from lightcycle.ranks import several_processes


def test_several_processes_are_read_from_the_launchers_variables():
    assert not several_processes({}) and not several_processes({"WORLD_SIZE": "1"})
    assert several_processes({"WORLD_SIZE": "2"}) and several_processes({"LOCAL_RANK": "1"})
    assert several_processes({"NODE_RANK": "0"}) and several_processes({"SLURM_NTASKS": "4"})


def test_one_process_checks_and_the_others_read_its_answer(image_folder, tmp_path, monkeypatch, decodes):
    monkeypatch.setenv("WORLD_SIZE", "4")
    bad_file = image_folder / "train" / "red" / "truncated.jpg"
    bad_file.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    paths = sorted(image_folder.rglob("*.jpg"))
    cache = tmp_path / "cache"

    def rank(_: int) -> list:
        return find_bad_images_once(paths, cache=VerifiedFiles(image_folder, None, cache), cache_dir=cache)

    with ThreadPoolExecutor(4) as pool:  # four ranks at once
        answers = list(pool.map(rank, range(4)))
    assert len(decodes) == len(paths)  # each file decoded once, not once per rank
    assert all(answer == answers[0] for answer in answers)
    assert [p for p, _ in answers[0]] == [bad_file]
    monkeypatch.delenv("WORLD_SIZE")
    decodes.clear()
    assert [p for p, _ in find_bad_images_once(paths, cache=VerifiedFiles(image_folder, None, cache))] == [bad_file]
    assert decodes == [bad_file]  # a single process checks itself (the good files are listed as verified)


def test_two_writers_of_the_verified_list_keep_each_others_entries(image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(verified, "RECENT_NS", 0)
    cache = tmp_path / "cache"
    first, second = sorted((image_folder / "train" / "red").glob("*.jpg"))[:2]
    a, b = VerifiedFiles(image_folder, None, cache), VerifiedFiles(image_folder, None, cache)
    a.unverified([first])
    b.unverified([second])
    a_read, b_wrote = threading.Event(), threading.Event()
    read = VerifiedFiles._read

    def slow_read(self):  # a reads what is on disk, then lingers before writing
        files = read(self)
        if self is a:
            a_read.set()
            b_wrote.wait(timeout=1.0)
        return files

    monkeypatch.setattr(VerifiedFiles, "_read", slow_read)

    def write_b() -> None:
        a_read.wait(timeout=10)
        b.update(good=[second])
        b_wrote.set()

    other = threading.Thread(target=write_b)
    other.start()
    a.update(good=[first])
    other.join(timeout=30)
    monkeypatch.setattr(VerifiedFiles, "_read", read)
    listed = VerifiedFiles(image_folder, None, cache)
    assert set(listed._read()) == {"train/red/" + first.name, "train/red/" + second.name}
