import multiprocessing
import time

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


def test_reentrant_within_a_process(tmp_path):
    with env_lock(tmp_path, "blog", "dev", "build"), env_lock(tmp_path, "blog", "dev", "step"):
        pass


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
