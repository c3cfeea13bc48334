"""Checkpoint save/resume, atomic writes, weight-file conversions (Caffe2, torchvision), URLs and catalog names."""

import functools
import http.server
import importlib
import os
import pickle
import signal
import sys
import threading

import numpy as np
import pytest
import torch
import torchvision
from helpers import ToyLoader, make_run
from torch import nn

from paa_core.checkpoint.checkpoint import Checkpointer, DetectronCheckpointer
from paa_core.checkpoint.model_serialization import WeightMismatchError
from paa_core.config import get_cfg
from paa_core.engine.trainer import TrainingStopped, TrainOptions, do_train
from paa_core.layers import FrozenBatchNorm2d
from paa_core.utils.errors import InputError


def train(save_dir, max_iter, period=100):
    model, opt, sched, ckpt = make_run(save_dir)
    arguments = {"iteration": 0}
    arguments.update(ckpt.load())
    loader = ToyLoader(max_iter, arguments["iteration"])
    do_train(model, loader, opt, sched, ckpt, arguments, TrainOptions(torch.device("cpu"), period))
    return model, opt, sched, arguments


def test_save_load_round_trip(tmp_path):
    model, opt, sched, arguments = train(str(tmp_path), 4, period=2)
    assert sorted(os.listdir(tmp_path)) == [
        "last_checkpoint",
        "metrics.jsonl",
        "model_0000002.pth",
        "model_0000004.pth",
        "model_final.pth",
    ]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    model2, opt2, sched2, ckpt2 = make_run(str(tmp_path))
    extra = ckpt2.load()
    assert extra == {"iteration": 4}
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    assert sched2.last_epoch == sched.last_epoch == 4
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    for p, p2 in zip(model.parameters(), model2.parameters()):
        assert torch.equal(opt.state[p]["momentum_buffer"], opt2.state[p2]["momentum_buffer"])


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    full_model, full_opt, full_sched, _ = train(str(tmp_path / "full"), 8)
    train(str(tmp_path / "split"), 4)  # "stopped" after 4 iterations
    model, opt, sched, arguments = train(str(tmp_path / "split"), 8)  # restarted: resumes at 4
    assert arguments["iteration"] == 8 and sched.last_epoch == full_sched.last_epoch == 8
    # lr after the steps at 3 and 6: 0.1 * 0.5**2
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)
    for a, b in zip(full_model.parameters(), model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


class SignalAt(ToyLoader):
    """A ToyLoader that sends SIGTERM to this process while it hands out iteration `at`."""

    def __init__(self, num_iters, at):
        super().__init__(num_iters)
        self.at = at

    def __iter__(self):
        for it, batch in enumerate(super().__iter__(), 1):
            if it == self.at:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch


def test_signal_stop_saves_the_iteration_and_resumes_identically(tmp_path):
    """SIGTERM during iteration 3 of 6: the iteration finishes, is saved (the period would not
    save it), and the stop is a TrainingStopped, not an InputError; the handler is restored."""
    full_model = train(str(tmp_path / "full"), 6)[0]
    model, opt, sched, ckpt = make_run(str(tmp_path / "split"))
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingStopped) as e:
        options = TrainOptions(torch.device("cpu"), 100)
        do_train(model, SignalAt(6, at=3), opt, sched, ckpt, {"iteration": 0}, options)
    assert not isinstance(e.value, InputError) and signal.getsignal(signal.SIGTERM) is handler
    saved = tmp_path / "split" / "model_0000003.pth"
    assert str(e.value) == (
        f"stopped by SIGTERM after iteration 3 of 6; saved {saved}; run the same command to resume"
    )
    assert (tmp_path / "split" / "last_checkpoint").read_text() == "model_0000003.pth"
    model, _, sched, arguments = train(str(tmp_path / "split"), 6)
    assert arguments["iteration"] == sched.last_epoch == 6
    for (k, a), b in zip(full_model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k


def train_fp16(save_dir, max_iter, period=100):
    """`train` under float16 autocast with a loss scaler that starts too high (its first steps
    overflow and are skipped) and grows back every 2 good steps: its state shapes the run."""
    model, opt, sched, ckpt = make_run(save_dir)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**17, growth_interval=2)
    arguments = {"iteration": 0}
    arguments.update(ckpt.load())
    options = TrainOptions(torch.device("cpu"), period, torch.float16, scaler)
    do_train(
        model, ToyLoader(max_iter, arguments["iteration"]), opt, sched, ckpt, arguments, options
    )
    return model, scaler


def test_float16_resumed_run_restores_the_loss_scaler(tmp_path):
    full_model, full_scaler = train_fp16(str(tmp_path / "full"), 8)
    train_fp16(str(tmp_path / "split"), 4)
    saved = torch.load(tmp_path / "split" / "model_final.pth", weights_only=True)["grad_scaler"]
    assert saved["_growth_tracker"] >= 0 and saved["scale"] < 2.0**17  # it backed off
    model, scaler = train_fp16(str(tmp_path / "split"), 8)
    assert scaler.get_scale() == full_scaler.get_scale()
    for a, b in zip(full_model.parameters(), model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # Without the saved scaler state, the restarted run takes other steps.
    train_fp16(str(tmp_path / "lost"), 4)
    ckpt = torch.load(tmp_path / "lost" / "model_final.pth", weights_only=True)
    del ckpt["grad_scaler"]
    torch.save(ckpt, tmp_path / "lost" / "model_final.pth")
    lost_model, lost_scaler = train_fp16(str(tmp_path / "lost"), 8)
    assert lost_scaler.get_scale() != full_scaler.get_scale() or any(
        not torch.equal(a, b) for a, b in zip(full_model.parameters(), lost_model.parameters())
    )


def test_resume_logs_iterations_after_restart(tmp_path, caplog):
    train(str(tmp_path), 3)
    caplog.set_level("DEBUG", logger="paa_core.trainer")
    train(str(tmp_path), 5)
    seen = [r.getMessage() for r in caplog.records if r.getMessage().startswith("iteration ")]
    assert seen == ["iteration 4 rank 0/1 images [6, 7]", "iteration 5 rank 0/1 images [8, 9]"]


def test_non_finite_loss_names_iteration_and_loss(tmp_path):
    model, opt, sched, ckpt = make_run(str(tmp_path))
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    with pytest.raises(
        InputError, match=r"iteration 1: loss_a=nan, loss_b=nan; no checkpoint was saved"
    ):
        do_train(
            model,
            ToyLoader(2),
            opt,
            sched,
            ckpt,
            {"iteration": 0},
            TrainOptions(torch.device("cpu"), 10),
        )


def test_save_is_atomic(tmp_path):
    model, opt, sched, ckpt = make_run(str(tmp_path))
    ckpt.save("model_0000001", iteration=1)
    with pytest.raises((pickle.PicklingError, AttributeError)):  # a lambda cannot be pickled
        ckpt.save("model_0000002", iteration=2, unpicklable=lambda: 0)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"


class Body(nn.Module):
    """The names of our ResNet body (stem + one bottleneck with a projection), at toy widths."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Module()
        self.stem.conv1 = nn.Conv2d(3, 4, 7, bias=False)
        self.stem.bn1 = FrozenBatchNorm2d(4)
        block = nn.Module()
        block.conv1, block.bn1 = nn.Conv2d(4, 2, 1, bias=False), FrozenBatchNorm2d(2)
        block.conv2, block.bn2 = nn.Conv2d(2, 2, 3, bias=False), FrozenBatchNorm2d(2)
        block.conv3, block.bn3 = nn.Conv2d(2, 8, 1, bias=False), FrozenBatchNorm2d(8)
        block.downsample = nn.Sequential(nn.Conv2d(4, 8, 1, bias=False), FrozenBatchNorm2d(8))
        self.layer1 = nn.Sequential(block)


class Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.body = Body()
        self.head = nn.Conv2d(8, 2, 1)


def fake_c2_blobs():
    rng = np.random.RandomState(0)
    shapes = {
        "conv1_w": (4, 3, 7, 7),
        "res_conv1_bn_s": (4,),
        "res_conv1_bn_b": (4,),
        "res2_0_branch2a_w": (2, 4, 1, 1),
        "res2_0_branch2a_bn_s": (2,),
        "res2_0_branch2a_bn_b": (2,),
        "res2_0_branch2b_w": (2, 2, 3, 3),
        "res2_0_branch2b_bn_s": (2,),
        "res2_0_branch2b_bn_b": (2,),
        "res2_0_branch2c_w": (8, 2, 1, 1),
        "res2_0_branch2c_bn_s": (8,),
        "res2_0_branch2c_bn_b": (8,),
        "res2_0_branch1_w": (8, 4, 1, 1),
        "res2_0_branch1_bn_s": (8,),
        "res2_0_branch1_bn_b": (8,),
        "fc1000_w": (10, 8),
        "fc1000_b": (10,),
        "res2_0_branch2a_w_momentum": (2, 4, 1, 1),
    }
    return {k: rng.randn(*s).astype(np.float32) for k, s in shapes.items()}


# Caffe2 blob -> our key under backbone.body, written out by hand.
C2_NAMES = {
    "conv1_w": "stem.conv1.weight",
    "res_conv1_bn_s": "stem.bn1.weight",
    "res_conv1_bn_b": "stem.bn1.bias",
    "res2_0_branch2a_w": "layer1.0.conv1.weight",
    "res2_0_branch2a_bn_s": "layer1.0.bn1.weight",
    "res2_0_branch2a_bn_b": "layer1.0.bn1.bias",
    "res2_0_branch2b_w": "layer1.0.conv2.weight",
    "res2_0_branch2b_bn_s": "layer1.0.bn2.weight",
    "res2_0_branch2b_bn_b": "layer1.0.bn2.bias",
    "res2_0_branch2c_w": "layer1.0.conv3.weight",
    "res2_0_branch2c_bn_s": "layer1.0.bn3.weight",
    "res2_0_branch2c_bn_b": "layer1.0.bn3.bias",
    "res2_0_branch1_w": "layer1.0.downsample.0.weight",
    "res2_0_branch1_bn_s": "layer1.0.downsample.1.weight",
    "res2_0_branch1_bn_b": "layer1.0.downsample.1.bias",
}


def write_pickle(path, blobs, wrap=True):
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs} if wrap else blobs, f, protocol=2)
    return str(path)


def assert_c2_loaded(model, blobs):
    state = model.state_dict()
    for c2_name, ours in C2_NAMES.items():
        assert torch.equal(state["backbone.body." + ours], torch.from_numpy(blobs[c2_name])), (
            c2_name
        )
    for key, value in state.items():
        if key.endswith("running_mean"):
            assert torch.equal(value, torch.zeros_like(value))
        if key.endswith("running_var"):
            assert torch.equal(value, torch.ones_like(value))


@pytest.mark.parametrize("wrap", [True, False])
def test_caffe2_pickle_names(tmp_path, wrap):
    blobs = fake_c2_blobs()
    path = write_pickle(tmp_path / "R-toy.pkl", blobs, wrap)
    model = Detector()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.running_mean.fill_(3.0)
                m.running_var.fill_(5.0)
    head_before = model.head.weight.clone()
    assert DetectronCheckpointer(get_cfg(), model).load(path) == {}
    assert_c2_loaded(model, blobs)
    assert torch.equal(model.head.weight, head_before)  # not in the file: left as built


def test_caffe2_pickle_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"blobs": {"conv1_w": Evil()}}, protocol=2))
    with pytest.raises(InputError, match=r"evil\.pkl: not a readable Caffe2 .* refusing to load"):
        DetectronCheckpointer(get_cfg(), Detector()).load(str(path))
    assert not (tmp_path / "pwned").exists()


def test_torchvision_resnet_names(tmp_path):
    tv = torchvision.models.resnet18()
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_()
                m.running_var.uniform_(0.5, 2)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")

    model = nn.Module()
    model.backbone = nn.Module()
    model.backbone.body = body = nn.Module()
    body.stem = nn.Module()
    body.stem.conv1, body.stem.bn1 = nn.Conv2d(3, 64, 7, bias=False), FrozenBatchNorm2d(64)
    ref = torchvision.models.resnet18()
    for name in ("layer1", "layer2", "layer3", "layer4"):
        setattr(body, name, getattr(ref, name))
    Checkpointer(model).load(str(tmp_path / "tv.pth"))
    state, tv_state = model.state_dict(), tv.state_dict()
    assert torch.equal(state["backbone.body.stem.conv1.weight"], tv_state["conv1.weight"])
    assert torch.equal(state["backbone.body.stem.bn1.running_var"], tv_state["bn1.running_var"])
    assert torch.equal(
        state["backbone.body.layer3.1.bn2.running_mean"], tv_state["layer3.1.bn2.running_mean"]
    )
    assert torch.equal(
        state["backbone.body.layer2.0.downsample.0.weight"],
        tv_state["layer2.0.downsample.0.weight"],
    )


def test_module_prefix_and_bare_state_dict(tmp_path):
    src = Detector()
    torch.save(
        {"model": {"module." + k: v for k, v in src.state_dict().items()}}, tmp_path / "ddp.pth"
    )
    dst = Detector()
    torch.nn.init.zeros_(dst.head.weight)
    Checkpointer(dst).load(str(tmp_path / "ddp.pth"))
    assert torch.equal(dst.head.weight, src.head.weight)


def test_mismatching_weights_give_one_clear_error(tmp_path):
    wrong = Detector().state_dict()
    wrong["head.weight"] = torch.zeros(3, 8, 1, 1)
    wrong["backbone.body.stem.conv1.weight"] = torch.zeros(5, 3, 7, 7)
    torch.save({"model": wrong}, tmp_path / "shapes.pth")
    with pytest.raises(WeightMismatchError) as e:
        Checkpointer(Detector()).load(str(tmp_path / "shapes.pth"))
    msg = str(e.value)
    assert (
        "\n" not in msg
        and "shapes.pth: 2 keys have a shape" in msg
        and "head.weight [3, 8, 1, 1]" in msg
    )

    torch.save({"fpn.inner1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WeightMismatchError, match="other.pth: none of its 1 keys fit the model"):
        Checkpointer(Detector()).load(str(tmp_path / "other.pth"))

    partial = {k: v for k, v in Detector().state_dict().items() if not k.startswith("head.")}
    torch.save({"model": partial}, tmp_path / "partial.pth")
    with pytest.raises(
        WeightMismatchError, match=r"2 model keys are missing from the file: head.weight, head.bias"
    ):
        Checkpointer(Detector()).load(str(tmp_path / "partial.pth"))

    extra = dict(Detector().state_dict(), **{"rpn.head.cls_logits.weight": torch.zeros(1)})
    torch.save({"model": extra}, tmp_path / "extra.pth")
    with pytest.raises(
        WeightMismatchError, match=r"1 keys fit no model key: rpn.head.cls_logits.weight"
    ):
        Checkpointer(Detector()).load(str(tmp_path / "extra.pth"))


def test_pth_is_loaded_without_unpickling_code(tmp_path):
    torch.save(
        {"model": Detector().state_dict(), "note": functools.partial(print, "hi")},
        tmp_path / "x.pth",
    )
    with pytest.raises(
        InputError, match=r"x\.pth: not a readable PyTorch weight file .*Weights only load failed"
    ):
        Checkpointer(Detector()).load(str(tmp_path / "x.pth"))


def test_url_downloaded_once_into_cache(tmp_path, monkeypatch):
    blobs = fake_c2_blobs()
    served = tmp_path / "served"
    served.mkdir()
    write_pickle(served / "R-toy.pkl", blobs)
    cache = tmp_path / "cache"
    monkeypatch.setenv("PAA_CACHE_DIR", str(cache))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/R-toy.pkl"
        model = Detector()
        DetectronCheckpointer(get_cfg(), model).load(url)
    finally:
        server.shutdown()
        server.server_close()
    assert os.listdir(cache) == ["R-toy.pkl"]
    assert_c2_loaded(model, blobs)
    # Served no more: the second load must come from the cache.
    (served / "R-toy.pkl").unlink()
    model = Detector()
    DetectronCheckpointer(get_cfg(), model).load(url)
    assert_c2_loaded(model, blobs)


CATALOG_MODULE = "paa_core.config.paths_catalog"


def test_catalog_name_resolves_through_model_catalog(tmp_path, monkeypatch):
    blobs = fake_c2_blobs()
    pkl = write_pickle(tmp_path / "R-toy.pkl", blobs)
    catalog = tmp_path / "my_catalog.py"
    catalog.write_text(
        "class ModelCatalog:\n"
        "    @staticmethod\n"
        "    def get(name):\n"
        f"        assert name == 'ImageNetPretrained/MSRA/R-toy', name\n"
        f"        return 'file://{pkl}'\n"
    )
    monkeypatch.setenv("PAA_CACHE_DIR", str(tmp_path / "cache"))
    # Loading the catalog file registers it as paa_core.config.paths_catalog: put ours back.
    monkeypatch.setitem(sys.modules, CATALOG_MODULE, importlib.import_module(CATALOG_MODULE))
    cfg = get_cfg()
    cfg.PATHS_CATALOG = str(catalog)
    model = Detector()
    DetectronCheckpointer(cfg, model).load("catalog://ImageNetPretrained/MSRA/R-toy")
    assert_c2_loaded(model, blobs)
    assert os.listdir(tmp_path / "cache") == ["R-toy.pkl"]


def test_missing_weight_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="weight file not found: .*nope.pth"):
        Checkpointer(Detector()).load(str(tmp_path / "nope.pth"))
