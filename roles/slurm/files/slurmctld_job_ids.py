#!/usr/bin/python3
"""Keep Slurm's job IDs increasing across a controller crash (slurmctld's ExecStartPre and
ExecStopPost, installed by clusterctl's slurm role).

slurmctld writes its state at most every 5 s. After a hard crash the next controller reads
the last saved state, so the IDs of jobs accepted since then would be given out again - and a
node that ran the lost job reports the same ID twice, which Slurm answers by draining it.
So on a start after anything but a clean stop, the next job ID is set past the saved one by
a margin more jobs than Slurm accepts in that window (FirstJobId, which slurmctld takes as a
floor, in a file slurm.conf includes). A clean stop saves everything: no gap then.

    slurmctld_job_ids.py start STATE_DIR FLOOR_FILE MARGIN
    slurmctld_job_ids.py stop STATE_DIR        # with systemd's $SERVICE_RESULT
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

CLEAN_STOP = "clusterctl-clean-stop"


def saved_job_id(state_dir: Path) -> int | None:
    """The job ID sequence in the header of job_state: a packed string (32-bit big-endian
    length, then the bytes), the 16-bit protocol version, a 64-bit time, the 32-bit ID."""
    try:
        data = (state_dir / "job_state").read_bytes()[:512]
        (length,) = struct.unpack_from(">I", data, 0)
        offset = 4 + length + 2 + 8
        (job_id,) = struct.unpack_from(">I", data, offset)
    except (OSError, struct.error):
        return None
    return job_id


def write_floor(floor_file: Path, first_job_id: int) -> None:
    text = f"# written by slurmctld_job_ids.py when slurmctld starts\nFirstJobId={first_job_id}\n"
    tmp = floor_file.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    tmp.replace(floor_file)


def start(state_dir: Path, floor_file: Path, margin: int) -> str:
    clean = state_dir / CLEAN_STOP
    if clean.exists():
        clean.unlink()
        return "the last controller stopped cleanly: its state is complete"
    saved = saved_job_id(state_dir)
    if saved is None:
        return "no saved job state: nothing to skip"
    write_floor(floor_file, saved + margin)
    return f"after an unclean stop: job IDs go on from {saved + margin} (saved {saved})"


def stop(state_dir: Path) -> str:
    if os.environ.get("SERVICE_RESULT", "success") != "success":
        return f"slurmctld ended with {os.environ.get('SERVICE_RESULT')}: no clean-stop mark"
    (state_dir / CLEAN_STOP).write_text("")
    return "clean stop marked"


def main(argv: list[str]) -> int:
    if len(argv) == 5 and argv[1] == "start":
        print(start(Path(argv[2]), Path(argv[3]), int(argv[4])))
        return 0
    if len(argv) == 3 and argv[1] == "stop":
        print(stop(Path(argv[2])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
