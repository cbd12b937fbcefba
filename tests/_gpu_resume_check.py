"""Manual check on a CUDA machine (not collected by pytest): rl resume on the GPU continues the curve.

    python tests/_gpu_resume_check.py cuda:0
"""

import shutil
import sys

from _training_helpers import near_train, scalars

device = sys.argv[1] if len(sys.argv) > 1 else "cuda:0"
base = ["task=mazeNEAR", "num_envs=1024", f"device={device}", "++task.env.maxEpisodeLength=50"]
cache, work = "/tmp/gpu-check-cache", "/tmp/gpu-check"
shutil.rmtree(work, ignore_errors=True)
nc = "++train.params.config.near_config"
assert near_train("ncsn", ["task=mazeNEAR", f"run_dir={work}/ncsn", f"device={device}", f"{nc}.training.n_iters=100"],
                  cache).returncode == 0
energy = [f"{nc}.inference.eb_model_checkpoint={work}/ncsn/nn/checkpoint.pth",
          f"{nc}.inference.running_mean_std_checkpoint={work}/ncsn/nn/running_mean_std.pth"]
runs = [("a", 4), ("b", 2), ("b", 4)]
for name, iters in runs:
    proc = near_train("rl", base + energy + [f"run_dir={work}/{name}", f"max_iterations={iters}",
                                             "++train.params.config.save_frequency=1"], cache)
    assert proc.returncode == 0, proc.stderr[-2000:]
a, b = scalars(f"{work}/a"), scalars(f"{work}/b")
for tag in ("losses/a_loss", "minibatch_energy/step", "ncsn_perturbation_level/step"):
    print(tag, "steps equal:", [s for s, _ in a[tag]] == [s for s, _ in b[tag]],
          "values equal:", a[tag] == b[tag], "max diff:", max(abs(x[1] - y[1]) for x, y in zip(a[tag], b[tag])))
