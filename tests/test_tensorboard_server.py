"""What a person sees in TensorBoard, read back from a real `tensorboard` process through its HTTP data API.

A sweep's folder (tests/test_sweeps.py's grid: one finished trial, one failed) is served on the loopback address
and a free port; the test reads the per-epoch scalars of each stage, the evaluation images and the HParams
plugin's trials, as the dashboard would fetch them, and stops the server at the end.
"""
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tensorboard(grid_sweep):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(grid_sweep), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast", "false", "--reload_interval", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # up, and every event file read once
            try:
                if len(_get(base, "/data/runs")) >= 4:
                    break
            except OSError:
                pass
            if server.poll() is not None:
                pytest.fail(f"tensorboard exited: {server.stdout.read()[-2000:]}")
            time.sleep(1)
        time.sleep(2)  # one more reload: the last event files' contents
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def _get(base, path, **params):
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _post(base, path, body):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_tensorboard_shows_each_stages_epochs_the_eval_images_and_every_trial(tensorboard, grid_sweep):
    metrics = json.loads((grid_sweep / "0" / "metrics.json").read_text())
    epochs = metrics["epochs"]

    scalars = _get(tensorboard, "/data/plugin/scalars/tags")
    train, validation = scalars["0/tensorboard/train"], scalars["0/tensorboard/validation"]
    for tag in ("epoch_loss", "epoch_accuracy", "epoch_lr", "epoch_stage"):
        assert tag in train, (tag, sorted(train))
    for tag in ("epoch_loss", "epoch_accuracy"):
        assert tag in validation, (tag, sorted(validation))
    stage = _get(tensorboard, "/data/plugin/scalars/scalars", run="0/tensorboard/train", tag="epoch_stage")
    assert [point[1] for point in stage] == list(range(epochs))  # one point per epoch, steps 0..epochs-1
    assert [point[2] for point in stage] == [0.0] * 1 + [1.0] * 1 + [2.0] * 1  # the three one-epoch stages
    val_accuracy = _get(tensorboard, "/data/plugin/scalars/scalars", run="0/tensorboard/validation",
                        tag="epoch_accuracy")
    assert len(val_accuracy) == epochs and all(0.0 <= p[2] <= 1.0 for p in val_accuracy)

    images = _get(tensorboard, "/data/plugin/images/tags")
    assert {"val/confusion_matrix", "training_curves"} <= set(images["0/tensorboard/eval"]), images
    shown = _get(tensorboard, "/data/plugin/images/images", run="0/tensorboard/eval", tag="val/confusion_matrix")
    assert shown and "query" in shown[0]
    with urllib.request.urlopen(f"{tensorboard}/data/plugin/images/individualImage?{shown[0]['query']}") as image:
        assert image.read(8) == b"\x89PNG\r\n\x1a\n"

    experiment = _post(tensorboard, "/data/plugin/hparams/experiment", {"experimentName": ""})
    hparam_names = {info["name"] for info in experiment["hparamInfos"]}
    assert {"backbone", "lr", "weights", "unfreeze"} <= hparam_names, hparam_names
    metric_tags = {info["name"]["tag"] for info in experiment["metricInfos"]}
    assert {"val_accuracy", "val_loss"} <= metric_tags, metric_tags
    groups = _post(tensorboard, "/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                                  "STATUS_RUNNING"],
        "colParams": [], "startIndex": 0, "sliceSize": 100})["sessionGroups"]
    assert len(groups) == 1, groups  # the finished trial; the failed one never reached its hyperparameters' log
    trial = groups[0]
    assert trial["hparams"]["backbone"] == "vgg16" and abs(trial["hparams"]["lr"] - 3e-3) < 1e-9
    values = {m["name"]["tag"]: m["value"] for m in trial["metricValues"]}
    assert abs(values["val_accuracy"] - metrics["val_accuracy"]) < 1e-6
