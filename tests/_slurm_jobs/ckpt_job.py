"""A tiny resumable job for the SLURM tests: counts `--steps` steps of `--step-s` seconds.

Like near's trainers: on SIGTERM/SIGUSR2 it saves a checkpoint at the next step boundary and exits
3; started again in the same run dir it resumes from the checkpoint. Every finished step is logged
to progress.log ("step K attempt A"), so a test sees lost (missing) or repeated steps.
"""

import argparse
import json
import os
import signal
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--run-dir", required=True)
p.add_argument("--steps", type=int, default=4)
p.add_argument("--step-s", type=float, default=0.5)
p.add_argument("--fail", action="store_true", help="exit 1 right away (a crashing job)")
p.add_argument("--needs", help="a file that must exist (the previous stage's output)")
a = p.parse_args()

os.makedirs(a.run_dir, exist_ok=True)
ckpt = os.path.join(a.run_dir, "ckpt.json")
log = open(os.path.join(a.run_dir, "progress.log"), "a", buffering=1)
state = json.load(open(ckpt)) if os.path.exists(ckpt) else {"step": 0, "attempt": 0}
state["attempt"] += 1
log.write(f"start attempt {state['attempt']} at step {state['step']} slurm {os.environ.get('SLURM_JOB_ID')}\n")
if a.fail:
    log.write("failing on purpose\n")
    sys.exit(1)
if a.needs and not os.path.exists(a.needs):
    log.write(f"missing {a.needs}\n")
    sys.exit(2)

stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append("TERM"))
signal.signal(signal.SIGUSR2, lambda *_: stop.append("USR2"))


def save():
    with open(ckpt + ".tmp", "w") as fh:
        json.dump(state, fh)
    os.replace(ckpt + ".tmp", ckpt)


while state["step"] < a.steps:
    if stop:
        save()
        log.write(f"checkpoint at step {state['step']} on SIG{stop[0]}\n")
        sys.exit(3)
    time.sleep(a.step_s)
    log.write(f"step {state['step']} attempt {state['attempt']}\n")
    state["step"] += 1
save()
open(os.path.join(a.run_dir, "done"), "w").write("ok\n")
log.write("finished\n")
