# Fail fast when the SLURM controller is unreachable (only with the slurm executor).
#
# The SLURM executor plugin retries each sbatch/squeue call for ~9 s and, if the
# controller disappears mid-run, falls back to sacct, which fails without
# accounting, and then waits forever (SIGTERM does not end it).  This checks the
# controller before anything is submitted and, during the run, aborts cleanly
# with SIGINT after the controller has been unreachable for a while.

import os
import shutil
import signal
import subprocess
import threading
import time

from snakemake.logging import logger


def _slurm_ping(timeout_s=15):
    if shutil.which("scontrol") is None:
        return False, "'scontrol' is not on PATH"
    try:
        p = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"'scontrol ping' did not answer within {timeout_s} s"
    text = (p.stdout + p.stderr).strip()
    ok = p.returncode == 0 and " is UP" in p.stdout
    return ok, (text.splitlines() or [f"exit code {p.returncode}"])[0]


def _slurm_watchdog(interval_s, max_failures):
    failures = 0
    while True:
        time.sleep(interval_s)
        ok, msg = _slurm_ping()
        failures = 0 if ok else failures + 1
        if failures >= max_failures:
            logger.error(
                f"SLURM controller unreachable for {failures * interval_s} s: {msg}. Aborting; "
                "check squeue for leftover jobs once it is back."
            )
            os.kill(os.getpid(), signal.SIGINT)  # SIGTERM would wait forever
            return


def slurm_guard(interval_s=20, max_failures=3):
    plugin = getattr(workflow, "executor_plugin", None)
    if plugin is None or getattr(plugin, "name", None) != "slurm":
        return
    ok, msg = _slurm_ping()
    if not ok:
        raise WorkflowError(
            f"SLURM controller not reachable ({msg}). Bring the cluster up "
            "(scripts/slurm-cluster.sh up) or run without the slurm profile."
        )
    threading.Thread(target=_slurm_watchdog, args=(interval_s, max_failures), daemon=True).start()


onstart:
    slurm_guard()
