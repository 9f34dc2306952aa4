"""Faults a user meets: a full disk, a damaged checkpoint, a broken image folder, bad export options.
Each is one line naming the file or value, and nothing good on disk is lost."""
import errno
import os
import tempfile

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from supernet import create_supernet_from_config
from supernet.checkpoint import (
    SUBNET_FORMAT,
    SUPERNET_FORMAT,
    CheckpointError,
    DiskFullError,
    load_supernet,
    save_checkpoint,
    save_json,
)
from supernet.data import DataError, build_data
from supernet.export import load_subnet, save_subnet

TINY = dict(name="vit", resolution=[8, 16], patch_size=4, in_chans=1, depth=[1, 2], embed_dim=[16, 24],
            num_heads=[1, 2], head_dim=8, mlp_ratio=[1.0, 2.0])
DIGITS = {"name": "digits", "img_size": 16, "val_fraction": 0.15, "test_fraction": 0.15, "max_shift": 1, "seed": 0}


def supernet_ckpt(net, **changes) -> dict:
    ckpt = {"format": SUPERNET_FORMAT, "version": 1, "model": dict(net.config), "space": net.space.to_dict(),
            "state_dict": net.state_dict(), "train_state": {}, "metrics": {}, "config": {"data": DIGITS}}
    return {key: value for key, value in {**ckpt, **changes}.items() if value is not None}


@pytest.fixture
def net():
    return create_supernet_from_config(TINY, num_classes=10).eval()


@pytest.fixture
def supernet_file(net, tmp_path):
    return save_checkpoint(supernet_ckpt(net), tmp_path / "run" / "supernet.pt")


# -- a full disk --------------------------------------------------------------------------------------
@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write lands on /dev/full, whose writes fail with the kernel's ENOSPC, as on a
    full disk; the temp file beside the destination is still created (and must be removed)."""
    real = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):
        os.close(fd)
        return real(os.open("/dev/full", os.O_WRONLY), mode, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", fdopen)


def _write_rows(rows, path):
    from search.report import write_rows

    return write_rows(path, rows)


@pytest.mark.parametrize("write", [
    lambda path: save_checkpoint({"format": SUPERNET_FORMAT, "state_dict": {"w": torch.randn(256, 256)}}, path),
    lambda path: save_json({"settings": {}, "finished": True}, path),
    lambda path: _write_rows([{"id": 1, "arch": {"depth": 2}, "accuracy": 0.5}], path),
], ids=["supernet.pt", "search_state.json", "evaluations.csv"])
def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_previous_one(tmp_path, write, request):
    path = tmp_path / "result"
    path.write_bytes(b"the previous result")
    request.getfixturevalue("full_disk")
    with pytest.raises(DiskFullError) as caught:
        write(path)
    message = str(caught.value)
    assert message.startswith(f"no space left on device writing {str(path)!r} (") and "MiB free there" in message
    assert "\n" not in message
    assert path.read_bytes() == b"the previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["result"]  # no temp file left


def test_torchs_short_write_on_a_full_disk_is_reported_as_no_space(tmp_path, monkeypatch):
    path = save_checkpoint({"format": SUPERNET_FORMAT, "step": 1}, tmp_path / "supernet.pt")
    good = path.read_bytes()

    def save(obj, f):  # what torch.save raises when the disk fills while it writes to a path
        f.write(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 579584 vs 579474")

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(DiskFullError, match=f"no space left on device writing {str(path)!r}"):
        save_checkpoint({"format": SUPERNET_FORMAT, "step": 2}, path)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["supernet.pt"]


def test_other_write_errors_pass_unchanged(tmp_path, monkeypatch):
    def save(obj, f):
        raise RuntimeError("a bug, not a full disk")

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(RuntimeError, match="a bug, not a full disk"):
        save_checkpoint({"format": SUPERNET_FORMAT}, tmp_path / "supernet.pt")


def test_a_full_disk_while_exporting_a_subnet_names_its_folder_and_keeps_the_old_one(net, tmp_path, monkeypatch):
    folder = tmp_path / "subnets" / "0003"
    folder.mkdir(parents=True)
    (folder / "arch.json").write_text("{}")

    def mkdtemp(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    with pytest.raises(DiskFullError, match=f"no space left on device writing {str(folder)!r}"):
        save_subnet(net, net.space.smallest(), folder, onnx=False)
    assert [p.name for p in folder.iterdir()] == ["arch.json"]


def test_a_signal_just_after_the_temp_file_is_created_leaves_none_behind(tmp_path, monkeypatch):
    real = os.open

    def open_then_interrupted(*args, **kwargs):  # Ctrl-C / SIGTERM as the temp file comes into being
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "open", open_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_json({"finished": False}, tmp_path / "search_state.json")
    assert list(tmp_path.iterdir()) == []


def test_the_temp_folder_of_an_export_killed_mid_way_is_removed_by_the_next_save(net, tmp_path):
    stale = tmp_path / "subnets" / ".0003.k1ll3d.tmp"  # what kill -9 during save_subnet leaves
    stale.mkdir(parents=True)
    (stale / "model.pt").write_bytes(b"half")
    other = tmp_path / "subnets" / ".0004.abc.tmp"  # another subnet's: not this save's business
    other.mkdir()
    save_subnet(net, net.space.smallest(), tmp_path / "subnets" / "0003", onnx=False)
    assert sorted(p.name for p in (tmp_path / "subnets").iterdir()) == [".0004.abc.tmp", "0003"]


def test_the_commands_report_a_full_disk_as_a_user_error():
    import search.run
    import supernet.train

    assert issubclass(DiskFullError, supernet.train.USER_ERRORS) and issubclass(DiskFullError, search.run.USER_ERRORS)


# -- a checkpoint of the right format with the wrong contents -------------------------------------------
def _one_line(caught) -> str:
    message = str(caught.value)
    assert "\n" not in message and "Error(s) in loading state_dict" not in message
    return message


@pytest.mark.parametrize("damage, expected", [
    (lambda sd: sd.update({"head.weight": torch.zeros(10, 7)}), "head.weight: shape (10, 7) in the file, (10, 24) "
                                                               "expected"),
    (lambda sd: sd.pop("head.bias"), "missing: head.bias"),
    (lambda sd: sd.update({"blocks.9.attn.qkv.weight": torch.zeros(3)}), "unexpected: blocks.9.attn.qkv.weight"),
], ids=["misshapen", "missing", "unexpected"])
def test_a_state_dict_entry_that_does_not_fit_is_named(net, tmp_path, damage, expected):
    state_dict = dict(net.state_dict())
    damage(state_dict)
    path = save_checkpoint(supernet_ckpt(net, state_dict=state_dict), tmp_path / "supernet.pt")
    with pytest.raises(CheckpointError) as caught:
        load_supernet(path)
    message = _one_line(caught)
    assert message.startswith(f"{str(path)!r}: the weights do not fit its model config (") and expected in message


def test_many_misshapen_entries_are_counted_not_listed(net, tmp_path):
    state_dict = {name: torch.zeros(*t.shape, 2) for name, t in net.state_dict().items()}
    path = save_checkpoint(supernet_ckpt(net, state_dict=state_dict), tmp_path / "supernet.pt")
    with pytest.raises(CheckpointError, match=rf"in the file, .* expected \(and {len(state_dict) - 1} more\)") as c:
        load_supernet(path)
    assert len(_one_line(c)) < 400


@pytest.mark.parametrize("changes, expected", [
    ({"model": None}, "has no 'model' entry (the model's name and options, with a name)"),
    ({"model": {"embed_dim": [16]}}, "has no 'model' entry"),
    ({"state_dict": None}, "has no 'state_dict' entry (the weights)"),
    ({"model": {**TINY, "num_classes": 10, "wings": 2}}, "its model config ('vit') cannot be built: model 'vit' has "
                                                         "no option 'wings'"),
    ({"model": {**TINY, "num_classes": 10, "depth": "deep"}}, "its model config ('vit') cannot be built"),
], ids=["no-model", "no-name", "no-state-dict", "unknown-option", "bad-option"])
def test_a_checkpoint_without_a_usable_model_config_is_named(net, tmp_path, changes, expected):
    path = save_checkpoint(supernet_ckpt(net, **changes), tmp_path / "supernet.pt")
    with pytest.raises(CheckpointError) as caught:
        load_supernet(path)
    assert expected in _one_line(caught) and str(path) in str(caught.value)


def test_a_subnet_file_that_does_not_fit_its_arch_is_named(net, tmp_path):
    arch = net.space.smallest()
    static = net.export(arch)
    base = {"format": SUBNET_FORMAT, "version": 1, "model": dict(net.config), "arch": arch}
    good = save_checkpoint({**base, "state_dict": static.state_dict()}, tmp_path / "good" / "model.pt")
    assert load_subnet(good.parent).arch == arch
    bad_sd = {**static.state_dict(), "head.weight": torch.zeros(10, 3)}
    bad = save_checkpoint({**base, "state_dict": bad_sd}, tmp_path / "bad" / "model.pt")
    with pytest.raises(CheckpointError, match=r"head.weight: shape \(10, 3\) in the file, \(10, 16\) expected"):
        load_subnet(bad)
    no_arch = save_checkpoint({**base, "arch": None, "state_dict": static.state_dict()}, tmp_path / "na" / "model.pt")
    with pytest.raises(CheckpointError, match="has no 'arch' entry"):
        load_subnet(no_arch)


def test_a_directory_passed_as_a_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=f"{str(tmp_path)!r} is a directory; pass the file in it"):
        load_supernet(tmp_path)


class Payload:
    def __reduce__(self):  # what a hostile checkpoint carries: a call run by an unsafe load
        return (os.system, ("echo pwned",))


def test_a_file_with_code_in_it_is_refused_without_the_hint_to_load_it_unsafely(tmp_path):
    path = tmp_path / "supernet.pt"
    torch.save({"format": SUPERNET_FORMAT, "model": Payload()}, path)
    with pytest.raises(CheckpointError) as caught:
        load_supernet(path)
    message = _one_line(caught)
    assert "holds Python objects beyond tensors, numbers, strings and containers" in message
    assert "weights_only" not in message and "could run code" in message


@pytest.mark.parametrize("content, expected", [
    (b"not a checkpoint", "is truncated or corrupt (Unsupported operand"),
    (b"hello", "is truncated or corrupt ("),
    (b"", "is empty (0 bytes)"),
])
def test_garbage_is_not_a_checkpoint(tmp_path, content, expected):
    (tmp_path / "supernet.pt").write_bytes(content)
    with pytest.raises(CheckpointError) as caught:
        load_supernet(tmp_path / "supernet.pt")
    assert expected in _one_line(caught) and "weights_only" not in str(caught.value)


# -- ImageFolder data -------------------------------------------------------------------------------------
def image_folder(root, classes=("cat", "dog"), per_class=2):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def test_a_sound_image_folder_loads(tmp_path):
    data = build_data("imagefolder", root=str(image_folder(tmp_path)), img_size=8, val_fraction=0.25)
    assert data.num_classes == 2 and len(data.test) == 4
    x, y = data.calib[0]
    assert x.shape == (3, 8, 8) and data.train[0][0].shape == (3, 8, 8)


def test_an_empty_class_folder_is_named_before_anything_is_read(tmp_path):
    root = image_folder(tmp_path)
    (root / "train" / "bird").mkdir()
    with pytest.raises(DataError, match=f"class folder {str(root / 'train' / 'bird')!r} has no images "):
        build_data("imagefolder", root=str(root), img_size=8)


def test_a_split_without_class_folders_is_named(tmp_path):
    root = image_folder(tmp_path)
    for path in sorted((root / "val").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    with pytest.raises(DataError, match=f"{str(root / 'val')!r} has no class folders"):
        build_data("imagefolder", root=str(root), img_size=8)


def test_train_and_val_with_other_classes_are_refused(tmp_path):
    root = image_folder(tmp_path)
    (root / "val" / "dog").rename(root / "val" / "wolf")
    with pytest.raises(DataError, match="val/ and train/ have different class folders .2 in one only, e.g. 'dog'"):
        build_data("imagefolder", root=str(root), img_size=8)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_corrupt_image_is_named_when_read(tmp_path, num_workers):
    root = image_folder(tmp_path)
    broken = root / "val" / "dog" / "1.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 10)
    data = build_data("imagefolder", root=str(root), img_size=8)
    with pytest.raises(DataError) as caught:
        list(DataLoader(data.test, batch_size=2, num_workers=num_workers))
    message = str(caught.value)
    assert message.startswith(f"{broken}: not a readable image (") and "\n" not in message  # also from a worker


# -- python -m supernet.export options --------------------------------------------------------------------
def export_cli(capsys, *argv) -> str:
    from supernet.export import main

    with pytest.raises(SystemExit) as caught:
        main([str(a) for a in argv])
    assert caught.value.code != 0
    lines = str(caught.value.code).splitlines()
    assert len(lines) == 1 and "Traceback" not in capsys.readouterr().err
    return lines[0]


@pytest.mark.parametrize("arch, expected", [
    ("biggest", "error: --arch 'biggest'; allowed: largest, smallest, median or an arch as JSON (a dict with keys "
                "resolution, depth, embed_dim, num_heads, mlp_ratio, bits, or OFA's ks, e, d, r)"),
    ("[1, 2]", "error: --arch '[1, 2]': arch key '<arch>': got [1, 2], allowed: a dict with keys"),
    ('{"resolution": 16}', "error: --arch '{\"resolution\": 16}': arch key 'depth': got '<missing>', allowed: [1, 2]"),
    ('{"resolution": 15, "depth": 1}',
     "error: --arch '{\"resolution\": 15, \"depth\": 1}': arch key 'resolution': got 15, allowed: [8, 16]"),
])
def test_export_names_a_bad_arch_and_what_is_allowed(supernet_file, tmp_path, capsys, arch, expected):
    line = export_cli(capsys, supernet_file, "--arch", "largest", arch, "--out", tmp_path / "out")
    assert line.startswith(expected)
    assert not (tmp_path / "out").exists()  # checked before the first subnet is written


def test_export_refuses_an_output_folder_that_is_a_file(supernet_file, tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    for out in (tmp_path / "taken", tmp_path / "taken" / "sub"):
        assert export_cli(capsys, supernet_file, "--out", out) == (
            f"error: --out {str(out)!r}: {str(tmp_path / 'taken')!r} is a file; allowed: a folder (made if missing)")


def test_export_names_a_missing_or_foreign_supernet(tmp_path, capsys):
    assert export_cli(capsys, tmp_path / "nope.pt") == f"error: checkpoint {str(tmp_path / 'nope.pt')!r} does not exist"
    (tmp_path / "notes.pt").write_text("hello")
    assert "is truncated or corrupt" in export_cli(capsys, tmp_path / "notes.pt")


def test_export_names_a_supernet_without_its_data(net, tmp_path, capsys):
    path = save_checkpoint(supernet_ckpt(net, config={}), tmp_path / "supernet.pt")
    assert export_cli(capsys, path, "--arch", "smallest") == (
        f"error: {str(path)!r} does not say which data it was trained on (config.data)")


def test_a_full_disk_writing_a_device_table_is_one_line_and_keeps_the_old_table(tmp_path, monkeypatch):
    import hw_profiles.files as files
    from hw_profiles import write_table
    from hw_profiles.errors import DiskFullError, ProfileError

    path = tmp_path / "tables" / "jetson.csv"
    rows = [{"arch": {"resolution": 8, "depth": 2}, "latency_ms": 1.5}]
    write_table(rows, path)
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(DiskFullError, match=r"no space left on device writing '.*jetson\.csv' \(\d+ MiB free there\)"):
        write_table(rows * 2, path)
    assert issubclass(DiskFullError, ProfileError)  # the commands print ProfileErrors as one line
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["jetson.csv"]
