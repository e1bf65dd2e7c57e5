import multiprocessing
import time

import pytest

from gdl.errors import LockHeld
from gdl.lock import env_lock, remove_lock_file


def _try_lock(lock_dir, queue, wait=0):
    try:
        with env_lock(lock_dir, "blog", "dev", "build", wait=wait):
            queue.put("acquired")
    except LockHeld as error:
        queue.put(str(error))


def test_second_process_is_refused_with_the_holder(tmp_path):
    queue = multiprocessing.Queue()
    with env_lock(tmp_path, "blog", "dev", "build"):
        worker = multiprocessing.Process(target=_try_lock, args=(tmp_path, queue))
        worker.start()
        worker.join(30)
        message = queue.get(timeout=5)
    assert message.startswith("blog-dev is busy: build by pid")
    assert "\n" not in message


def test_lock_is_free_after_release(tmp_path):
    queue = multiprocessing.Queue()
    with env_lock(tmp_path, "blog", "dev", "build"):
        pass
    worker = multiprocessing.Process(target=_try_lock, args=(tmp_path, queue))
    worker.start()
    worker.join(30)
    assert queue.get(timeout=5) == "acquired"


def test_reentrant_within_a_process_with_the_holders_token(tmp_path):
    with env_lock(tmp_path, "blog", "dev", "build") as token:
        with env_lock(tmp_path, "blog", "dev", "step", token=token) as inner:
            assert inner == token
        # Still held after the step: another process is refused.
        queue = multiprocessing.Queue()
        worker = multiprocessing.Process(target=_try_lock, args=(tmp_path, queue))
        worker.start()
        worker.join(30)
        assert queue.get(timeout=5).startswith("blog-dev is busy: build by pid")


def test_the_holders_own_process_is_refused_without_its_token(tmp_path):
    with env_lock(tmp_path, "blog", "dev", "build"):
        for token in (None, "0" * 32):
            with (
                pytest.raises(LockHeld, match=r"^blog-dev is busy: build by pid \d+ since "),
                env_lock(tmp_path, "blog", "dev", "build", token=token),
            ):
                pass


def _step_with_token(lock_dir, token, queue):
    try:
        with env_lock(lock_dir, "blog", "dev", "write_pillar", token=token):
            queue.put("ran")
    except LockHeld as error:
        queue.put(str(error))


@pytest.mark.parametrize("right_token", [True, False])
def test_a_step_in_another_process_runs_inside_the_lock_with_the_holders_token(
    tmp_path, right_token
):
    queue = multiprocessing.Queue()
    with env_lock(tmp_path, "blog", "dev", "build") as token:
        given = token if right_token else token[::-1]
        worker = multiprocessing.Process(target=_step_with_token, args=(tmp_path, given, queue))
        worker.start()
        worker.join(30)
        answer = queue.get(timeout=5)
    if right_token:
        assert answer == "ran"
    else:
        assert answer.startswith("blog-dev is busy: build by pid")


def _read_file(path, queue):
    queue.put(path.read_text())


def test_the_lock_file_names_the_holder_but_keeps_no_usable_token(tmp_path):
    queue = multiprocessing.Queue()
    with env_lock(tmp_path, "blog", "dev", "build") as token:
        # Read by another process: closing a descriptor of the file here would drop the lock.
        worker = multiprocessing.Process(
            target=_read_file, args=(tmp_path / "gdl-blog-dev.lock", queue)
        )
        worker.start()
        worker.join(30)
        text = queue.get(timeout=5)
    assert '"operation": "build"' in text
    assert token not in text


def test_other_environments_do_not_wait(tmp_path):
    with env_lock(tmp_path, "blog", "dev", "build"), env_lock(tmp_path, "blog", "qa", "build"):
        pass


def test_removed_lock_file_is_recreated(tmp_path):
    with env_lock(tmp_path, "blog", "dev", "destroy"):
        remove_lock_file(tmp_path, "blog", "dev")
    with env_lock(tmp_path, "blog", "dev", "build"):
        assert (tmp_path / "gdl-blog-dev.lock").exists()


def test_waiting_takes_the_lock_once_it_is_released(tmp_path):
    queue = multiprocessing.Queue()
    with env_lock(tmp_path, "blog", "dev", "build"):
        worker = multiprocessing.Process(target=_try_lock, args=(tmp_path, queue, 30))
        worker.start()
        time.sleep(1)  # the worker is waiting on the held lock meanwhile
        assert queue.empty()
    worker.join(30)
    assert queue.get(timeout=5) == "acquired"


def test_waiting_gives_up_with_the_holder(tmp_path):
    queue = multiprocessing.Queue()
    with env_lock(tmp_path, "blog", "dev", "build"):
        worker = multiprocessing.Process(target=_try_lock, args=(tmp_path, queue, 1))
        worker.start()
        worker.join(30)
        message = queue.get(timeout=5)
    assert message.startswith("blog-dev is busy: build by pid")
