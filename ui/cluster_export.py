"""Train tab: export the current run as a bundle that trains unchanged on a cluster (`python -m tuning bundle`)."""

from __future__ import annotations

import gradio as gr

from tuning.errors import KanteleError
from tuning.portable.bundle import plan_bundle, write_bundle_zip
from tuning.runs.owner import Owner
from ui.messages import for_visitor
from ui.run_download import run_download_panel
from ui.state import RUNS

CLUSTER_EXPORT_DIR = "cluster"  # inside the run folder: the bundle belongs to its run
EXPORT_HELP = ("A zip that trains this run unchanged on a cluster: the recipe, the exact data, the code, "
               "`train.sh` (N GPUs) and `train.sbatch` (SLURM, one or more nodes); README.txt inside says how. "
               "Bring the adapter back with **Import a trained adapter** in the Chat tab.")


def export_for_cluster(run_id: str | None, owner: Owner | None):
    """This visitor's current run as a cluster bundle (zip) to download."""
    if not run_id:
        return "Start a training run first: its recipe and data are what the bundle holds.", None
    try:
        run_dir = RUNS.run(run_id, owner).path
        bundle = plan_bundle(run_dir)
        path = write_bundle_zip(bundle, run_dir / CLUSTER_EXPORT_DIR / f"{bundle.name}.zip")
    except (KanteleError, OSError, ValueError) as error:
        return f"**Not exported:** {for_visitor(error)}", None
    notes = "".join(f"\n\n**Note:** {note}" for note in bundle.notes)
    return (f"Bundle of `{run_id}` ready. On the cluster:\n```sh\nunzip {path.name} && cd {bundle.name}\n"
            f"N=4 bash train.sh        # or: sbatch train.sbatch\n```{notes}"), str(path)


def build_export_panel(run_state, owner_state: gr.State) -> None:
    """The 'Export for a cluster' button and the zip it makes."""
    run_download_panel("Train on a cluster (export this run)", EXPORT_HELP, "Export for a cluster", "Cluster bundle",
                       "export-cluster", export_for_cluster, [run_state, owner_state])
