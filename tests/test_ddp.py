"""Data-parallel training on torch's DistributedDataParallel: two gloo processes on half the batch
each end with the weights of one process on the whole batch."""
import subprocess
import sys

from conftest import ROOT
from test_train import env

from supernet.checkpoint import load_checkpoint

# float (no bit widths: the quantizers' LSQ gradient scale depends on the per-rank batch), no
# augmentation (its random shifts are drawn per process), layer norms only (the ViT: batch norm
# statistics are per rank by design)
SAME_WORK = ["+model=vit", "model.bits=[32]", "data.max_shift=0", "max_steps_per_epoch=4", "num_eval_subnets=0",
             "sampler.pool_size=200", "bn_calib_images=64",
             "model.schedule=[{name:largest,epochs:1,lr:0.002,unlock:[resolution]},"
             "{name:depth,epochs:1,lr:0.001,unlock:[depth]},{name:width,epochs:1,lr:0.001,"
             "unlock:[num_heads,mlp_ratio,embed_dim]}]"]


def test_two_processes_on_half_batches_equal_one_process_on_the_whole_batch(tmp_path):
    one = subprocess.run([sys.executable, "-m", "supernet.train", *SAME_WORK, f"out_dir={tmp_path}", "run_name=one",
                          "batch_size=32", "device=cpu"], capture_output=True, text=True, cwd=ROOT, env=env(),
                         timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                          "-m", "supernet.train", *SAME_WORK, f"out_dir={tmp_path}", "run_name=two", "batch_size=16",
                          "device=cpu"], capture_output=True, text=True, cwd=ROOT, env=env(), timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (load_checkpoint(tmp_path / name / "supernet.pt", "ofa-nas/supernet") for name in ("one", "two"))
    assert a["train_state"]["step"] == b["train_state"]["step"] == 12
    # 12 AdamW steps of ~1e-3: the two runs differ by float32 summation order only (gradients of 32
    # images summed in one process vs. two halves averaged by DDP's all-reduce)
    worst = max((a["state_dict"][k].float() - b["state_dict"][k].float()).abs().max().item() for k in a["state_dict"])
    assert worst < 1e-4, worst
