"""Two threads asking one Explainer for the SAME image at the same moment: the shared
caches must make the second wait for and reuse the first one's work. Work is counted
for real by a counter layer inside the model (see toy_models.PassCounter)."""

import threading

import numpy as np
from toy_models import counted_convnet

import camcore

SIZE = 12


def run_together(explainer, call, n_threads=2):
    """Run ``call(explainer)`` in ``n_threads`` threads released together by a barrier."""
    barrier = threading.Barrier(n_threads)
    results, failures = [None] * n_threads, []

    def work(i):
        try:
            barrier.wait(timeout=30)
            results[i] = call(explainer)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    return results


def single_thread(model, counter, call):
    """``call`` on a fresh explainer in this thread: (its result, images it ran)."""
    before = counter.images()
    result = call(camcore.Explainer(model, batch_size=2))
    return result, counter.images() - before


def test_same_image_from_two_threads_runs_score_cam_once():
    model, counter = counted_convnet(size=SIZE, channels=12, seed=11)
    x = np.random.default_rng(11).uniform(0, 1, (1, SIZE, SIZE, 3)).astype(np.float32)

    def call(explainer):
        return explainer.compute("score_cam", x, "conv2", 0).cam

    expected, single = single_thread(model, counter, call)
    assert single > 2  # activations and several masked passes

    for _ in range(3):  # fresh explainer each round: the race is at the first request
        explainer = camcore.Explainer(model, batch_size=2)
        before = counter.images()
        maps = run_together(explainer, call)
        assert counter.images() - before == single, "both threads ran the masked passes"
        for cam in maps:
            np.testing.assert_allclose(cam, expected, atol=1e-6)


def test_same_image_from_two_threads_runs_the_gradient_pass_once():
    model, counter = counted_convnet(size=SIZE, channels=12, seed=12)
    x = np.random.default_rng(12).uniform(0, 1, (1, SIZE, SIZE, 3)).astype(np.float32)

    def call(explainer):
        return (explainer.compute("grad_cam", x, "conv2", 1).cam,
                explainer.compute("grad_cam_plus_plus", x, "conv2", 1).cam)

    expected, single = single_thread(model, counter, call)
    assert single == 1
    for _ in range(3):
        explainer = camcore.Explainer(model)
        before = counter.images()
        results = run_together(explainer, call)
        assert counter.images() - before == single, "both threads ran the forward+backward pass"
        for grad, plus in results:
            np.testing.assert_allclose(grad, expected[0], atol=1e-6)
            np.testing.assert_allclose(plus, expected[1], atol=1e-6)
