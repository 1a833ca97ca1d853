"""buildx_runtime: batches, batch-wise transforms, checkpoints, resume and the test metrics."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from torch import nn

from sandbox.engine import buildx_runtime as rt


@pytest.fixture(autouse=True)
def fresh_runtime(tmp_path):
    rt.configure(device="cpu", checkpoint_dir=tmp_path / "checkpoints")
    yield
    rt.configure(device="cpu")


def numbered_batch(b: int = 4, c: int = 1, h: int = 6, w: int = 6) -> torch.Tensor:
    """A batch where every pixel is different, so a crop or flip can be traced back."""
    return torch.arange(b * c * h * w, dtype=torch.float32).view(b, c, h, w)


def test_batches_cover_every_sample_once_per_epoch_as_floats_in_0_1():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous() * 25
    split = rt.Split(images, torch.arange(10))
    seen = []
    for x, y in split.batches(4, shuffle=True):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 2, 2)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        # the image still belongs to its label after shuffling
        assert torch.allclose(x[:, 0, 0, 0], y.float() * 25 / 255)
        seen += y.tolist()
    assert sorted(seen) == list(range(10))
    assert len(split) == 10
    assert [len(y) for _, y in split.batches(4)] == [4, 4, 2]


def test_a_stop_request_raises_stop_training_at_the_next_batch_boundary():
    split = rt.Split(torch.zeros(8, 1, 2, 2, dtype=torch.uint8), torch.zeros(8, dtype=torch.long))
    taken = 0
    with pytest.raises(rt.StopTraining):
        for _ in split.batches(2):
            taken += 1
            rt.request_stop(0, None)
    assert taken == 1
    assert rt.stop_requested()
    # StopTraining is not an Exception: a script's `except Exception` cannot swallow it.
    assert not issubclass(rt.StopTraining, Exception)


def test_flips_turn_exactly_the_chosen_images():
    x = numbered_batch()
    assert torch.equal(rt.RandomHorizontalFlip(p=1.0)(x), x.flip(-1))
    assert torch.equal(rt.RandomVerticalFlip(p=1.0)(x), x.flip(-2))
    assert torch.equal(rt.RandomHorizontalFlip(p=0.0)(x), x)
    torch.manual_seed(0)
    mixed = rt.RandomHorizontalFlip(p=0.5)(numbered_batch(b=64))
    flipped = [torch.equal(m, o.flip(-1)) for m, o in zip(mixed, numbered_batch(b=64), strict=True)]
    assert 10 < sum(flipped) < 54


def test_random_crop_takes_a_window_of_the_padded_image_per_sample():
    x = numbered_batch(b=16, c=2)
    out = rt.RandomCrop(6, padding=2)(x)
    assert out.shape == x.shape
    padded = nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(16):
        matches = [
            (t, l)
            for t in range(5)
            for l in range(5)  # noqa: E741
            if torch.equal(out[i], padded[i, :, t : t + 6, l : l + 6])
        ]
        assert matches, f"sample {i} is not a window of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 1  # each sample gets its own offset


def test_resize_center_crop_grayscale_and_normalize_give_the_expected_shapes_and_values():
    x = torch.rand(3, 3, 32, 32)
    assert rt.Resize(16)(x).shape == (3, 3, 16, 16)
    assert rt.Resize((20, 24))(x).shape == (3, 3, 20, 24)
    assert torch.equal(rt.CenterCrop(28)(x), x[..., 2:30, 2:30])
    gray = rt.Grayscale()(x)
    assert gray.shape == (3, 1, 32, 32)
    assert torch.allclose(gray[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
    assert rt.Grayscale(3)(x).shape == (3, 3, 32, 32)
    norm = rt.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(x)
    assert torch.allclose(norm, (x - 0.5) / 0.25)
    composed = rt.Compose([rt.Grayscale(), rt.Resize(28), rt.Normalize((0.5,), (0.5,))])
    assert composed(x).shape == (3, 1, 28, 28)


def test_rotation_and_color_jitter_keep_the_batch_shape_and_range():
    x = torch.rand(8, 3, 16, 16)
    assert torch.allclose(rt.RandomRotation(0)(x), x, atol=1e-5)
    turned = rt.RandomRotation(30)(x)
    assert turned.shape == x.shape and not torch.allclose(turned, x)
    jittered = rt.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)(x)
    assert jittered.shape == x.shape
    assert float(jittered.min()) >= 0.0 and float(jittered.max()) <= 1.0
    assert not torch.allclose(jittered, x)
    # hue 0 and the rest 0: the colours stay as they were
    assert torch.allclose(rt.ColorJitter()(x), x)
    assert torch.allclose(rt.ColorJitter.rotate_hue(x, torch.zeros(8, 1, 1, 1)), x, atol=1e-5)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).flatten(1))


def trained_tiny(steps: int = 3) -> tuple[nn.Module, torch.optim.Optimizer, object]:
    torch.manual_seed(0)
    model = Tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for _ in range(steps):
        loss = model(torch.randn(5, 1, 4, 4)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def test_checkpoints_are_safetensors_and_json_the_platform_can_read_without_pickle(tmp_path):
    model, optimizer, scheduler = trained_tiny()
    rt.save_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, epoch=1, metric=0.5)
    rt.save_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, epoch=2, metric=0.4)
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [
        "best.json",
        "best.safetensors",
        "last.json",
        "last.safetensors",
    ]

    last = json.loads((folder / "last.json").read_text())
    best = json.loads((folder / "best.json").read_text())
    assert (last["epoch"], last["metric"], last["best_metric"]) == (2, 0.4, 0.5)
    assert (best["epoch"], best["metric"]) == (1, 0.5)  # best kept the better epoch
    assert last["scheduler"]["last_epoch"] == 3
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01 * 0.5**3)

    tensors = load_file(folder / "last.safetensors")  # the safetensors library, as the platform reads it
    for key, value in model.state_dict().items():
        assert torch.equal(tensors[f"model.{key}"], value)
    assert "optimizer.state.0.exp_avg" in tensors


def test_resume_restores_model_optimizer_and_scheduler_and_returns_the_completed_epochs(tmp_path):
    model, optimizer, scheduler = trained_tiny()
    rt.save_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, epoch=3, metric=0.9)

    rt.configure(device="cpu", checkpoint_dir=tmp_path / "checkpoints", resume=True)
    torch.manual_seed(1)
    fresh = Tiny()
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.01)
    fresh_sched = torch.optim.lr_scheduler.StepLR(fresh_opt, step_size=1, gamma=0.5)
    assert rt.resume(model=fresh, optimizer=fresh_opt, scheduler=fresh_sched) == 3

    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)
    assert fresh_sched.state_dict() == scheduler.state_dict()
    old, new = optimizer.state_dict(), fresh_opt.state_dict()
    assert old["param_groups"][0]["lr"] == new["param_groups"][0]["lr"]
    for i, state in old["state"].items():
        for name, value in state.items():
            assert torch.equal(new["state"][i][name], value)
    # Both continue identically from here.
    x = torch.randn(5, 1, 4, 4)
    for m, o in ((model, optimizer), (fresh, fresh_opt)):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    assert torch.equal(model.fc.weight, fresh.fc.weight)


def test_resume_on_a_fresh_run_returns_0_and_a_stop_saves_the_completed_epochs(tmp_path):
    model, optimizer, _ = trained_tiny()
    assert rt.resume(model=model, optimizer=optimizer) == 0
    rt.report_epoch(epoch=1, epochs=5, train_loss=1.0, train_acc=0.5, val_loss=1.0, val_acc=0.5, lr=0.01)
    assert rt.finish_stop() == 1
    meta = json.loads((tmp_path / "checkpoints" / "last.json").read_text())
    assert meta["epoch"] == 1


def test_write_and_read_safetensors_round_trip_every_dtype(tmp_path):
    tensors = {
        "f32": torch.randn(3, 4),
        "bf16": torch.randn(5).bfloat16(),
        "i64": torch.arange(7),
        "u8": torch.arange(6, dtype=torch.uint8).view(2, 3),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "bool": torch.tensor([True, False]),
    }
    rt.write_safetensors(tmp_path / "t.safetensors", tensors, metadata={"a": "b"})
    back, meta = rt.read_safetensors(tmp_path / "t.safetensors")
    official = load_file(tmp_path / "t.safetensors")
    assert meta == {"a": "b"}
    for key, value in tensors.items():
        assert torch.equal(back[key], value) and back[key].dtype == value.dtype
        assert torch.equal(official[key], value)


def test_the_classification_report_agrees_with_scikit_learn():
    g = torch.Generator().manual_seed(3)
    actual = torch.randint(0, 4, (200,), generator=g)
    predicted = torch.where(
        torch.rand(200, generator=g) < 0.7, actual, torch.randint(0, 4, (200,), generator=g)
    )
    report = rt.classification_report(predicted, actual, ["a", "b", "c", "d"])
    p, r, f, _ = precision_recall_fscore_support(actual, predicted, average="macro", zero_division=0)
    assert report["precision"] == pytest.approx(p)
    assert report["recall"] == pytest.approx(r)
    assert report["f1"] == pytest.approx(f)
    assert report["accuracy"] == pytest.approx(float((actual == predicted).float().mean()))
    assert report["confusion_matrix"] == confusion_matrix(actual, predicted).tolist()
    assert report["per_class_accuracy"] == pytest.approx(
        [float((predicted[actual == c] == c).float().mean()) for c in range(4)]
    )
    assert report["samples"] == 200 and report["class_names"] == ["a", "b", "c", "d"]


def test_evaluate_returns_mean_loss_and_accuracy_and_restores_train_mode():
    images = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    split = rt.Split(images, torch.arange(10) % 3)
    model = Tiny()
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    loss, acc = rt.evaluate(model, split, loss_fn=loss_fn, batch_size=3, transform=None)
    model.eval()
    with torch.no_grad():
        logits = model(images.float() / 255)
    assert loss == pytest.approx(float(loss_fn(logits, split.labels)), rel=1e-5)
    assert acc == pytest.approx(float((logits.argmax(1) == split.labels).float().mean()))


def test_events_go_to_the_pipe_as_json_lines_with_the_contract_fields(tmp_path, monkeypatch, capsys):
    read_fd, write_fd = os.pipe()
    rt.configure(events_fd=write_fd, device="cpu", checkpoint_dir=tmp_path / "checkpoints", epochs=2)
    monkeypatch.setattr(rt, "PROGRESS_EVERY_S", 0.0)  # every batch, for the test
    split = rt.Split(torch.zeros(5, 1, 2, 2, dtype=torch.uint8), torch.zeros(5, dtype=torch.long))
    list(split.batches(2))
    rt.log("hello", 3)
    rt.report_epoch(epoch=1, epochs=2, train_loss=0.5, train_acc=0.75, val_loss=0.25, val_acc=0.8, lr=0.01)
    rt.state.events.flush()
    os.close(write_fd)
    with os.fdopen(read_fd, encoding="utf-8") as pipe:
        events = [json.loads(line) for line in pipe]

    assert events[:3] == [
        {"kind": "progress", "epoch": 1, "epochs": 2, "batch": b, "batches": 3} for b in range(3)
    ]
    assert events[3] == {"kind": "log", "line": "hello 3", "stream": "runtime"}
    epoch = events[4]
    assert set(epoch) == {
        "kind",
        "epoch",
        "epochs",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "lr",
        "seconds",
    }
    assert (epoch["epoch"], epoch["val_acc"], epoch["lr"]) == (1, 0.8, 0.01)
    assert "Epoch 1/2  train loss 0.5000 acc 75.0%  val loss 0.2500 acc 80.0%" in capsys.readouterr().out
