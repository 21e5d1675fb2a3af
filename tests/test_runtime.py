"""runtime.parallel_map: single-threaded workers for inference tiles, and what it must leave as it was."""

import os
import threading

import pytest
import torch
from test_inference import make_model, noise

from hear_diffbyola import embed, runtime


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_items_run_on_single_threaded_workers_in_order(two_threads):
    def work(i: int) -> tuple[int, str, int, bool, bool]:
        return (
            i * i,
            threading.current_thread().name,
            torch.get_num_threads(),
            torch.is_grad_enabled(),
            runtime.in_worker(),
        )

    out = runtime.parallel_map(work, list(range(7)), 2)
    assert [o[0] for o in out] == [i * i for i in range(7)]  # item order, whichever worker ran it
    assert all(name.startswith("hear-diffbyola") for _, name, _, _, _ in out)
    assert {o[2] for o in out} == {1}  # each worker's own ops on one thread
    assert not any(o[3] for o in out) and all(o[4] for o in out)  # autograd off there; they know they are workers
    assert not runtime.in_worker()


def test_the_callers_thread_count_and_the_default_for_new_threads_are_kept(two_threads):
    runtime.parallel_map(lambda i: i, [0, 1, 2], 2)
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert torch.get_num_threads() == 2 and seen == [2]


def test_inline_without_workers_items_or_when_nested(two_threads):
    main = threading.current_thread().name
    assert runtime.parallel_map(lambda i: threading.current_thread().name, [0, 1], 1) == [main, main]
    assert runtime.parallel_map(lambda i: threading.current_thread().name, [0], 2) == [main]

    def nested(i: int) -> list[str]:  # a worker calling parallel_map again must not wait on its own pool
        return runtime.parallel_map(lambda j: threading.current_thread().name, [0, 1, 2], 2)

    for names in runtime.parallel_map(nested, [0, 1, 2, 3], 2):
        assert len(set(names)) == 1 and names[0] != main


def test_an_error_in_a_worker_reaches_the_caller(two_threads):
    def work(i: int) -> int:
        if i == 3:
            raise ValueError("tile 3 is bad")
        return i

    with pytest.raises(ValueError, match="tile 3 is bad"):
        runtime.parallel_map(work, list(range(5)), 2)


def test_a_forked_child_builds_its_own_pool(two_threads, monkeypatch):
    runtime.parallel_map(lambda i: i, [0, 1], 2)
    pools = dict(runtime._pools)
    monkeypatch.setattr(runtime.os, "getpid", lambda: -1)  # the parent's worker threads do not exist in a child
    assert runtime.parallel_map(lambda i: i + 1, [0, 1], 2) == [1, 2]
    assert (-1, 2) in runtime._pools and (-1, 2) not in pools
    runtime._pools.pop((-1, 2)).shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_without_the_parents_pool_or_lock(two_threads):
    runtime.parallel_map(lambda i: i, [0, 1], 2)
    assert runtime._pools
    with runtime._pools_lock:  # held by this thread at the fork, as a parent thread might hold it
        pid = os.fork()
        if pid == 0:  # the child: no torch ops here (torch's OpenMP would need torch.set_num_threads(1))
            os._exit(0 if not runtime._pools and runtime._pools_lock.acquire(timeout=5) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("arch", ["v2", "v1"])
def test_embeddings_on_workers_equal_the_one_call_at_a_time_path(arch, monkeypatch):
    model = make_model(arch)
    w = noise(4, 3.0, seed=2)  # 4 tiles of one clip each: two per worker
    used = []
    real = runtime.parallel_map
    monkeypatch.setattr(runtime, "parallel_map", lambda f, items, n: used.append((n, len(items))) or real(f, items, n))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        scene1, (dense1,) = (
            embed.clip_embedding(model, w, tile_frames=512),
            embed.dense_frames(model, w, tile_frames=512)[0],
        )
        torch.set_num_threads(2)
        scene2, (dense2,) = (
            embed.clip_embedding(model, w, tile_frames=512),
            embed.dense_frames(model, w, tile_frames=512)[0],
        )
    finally:
        torch.set_num_threads(before)
    assert [n for n, _ in used] == [1, 1, 2, 2] and all(k >= 2 for _, k in used[2:])
    torch.testing.assert_close(scene2, scene1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dense2, dense1, rtol=1e-6, atol=1e-6)


def test_balance_is_the_busy_share_of_the_workers():
    def tile(n_sounds: int, frames: int) -> embed.Tile:
        return (slice(0, n_sounds), 0, (0, frames, 0, 0, 1))

    assert embed._balance([tile(2, 1001)] * 8, 2) == 1.0
    assert embed._balance([tile(1, 301)] * 5, 2) == pytest.approx(5 / 6)  # 3 tiles on one worker, 2 on the other
    assert embed._balance([tile(1, 2064), tile(1, 969)], 2) == pytest.approx(3033 / (2 * 2064))
    assert embed._balance([tile(1, 500), tile(3, 100)], 2) == pytest.approx(800 / (2 * 500))


def test_workers_only_when_they_would_be_evenly_busy(two_threads):
    model = make_model("v2")
    workers, tiles = embed._schedule(embed.FrameGrid.of(model), noise(16, 10.0), 1, 512, None, True)
    assert workers == 2 and len(tiles) == 8  # two 10-s clips per tile
    workers, _ = embed._schedule(embed.FrameGrid.of(model), noise(1, 30.0), 1, 512, None, True)
    assert workers == 1  # its two uneven tiles (2056 and 961 frames) would leave a worker idle
    workers, _ = embed._schedule(embed.FrameGrid.of(model), noise(16, 10.0), 1, 512, None, False)
    assert workers == 1  # a caller's own frame function: one tile at a time
