"""Starting single-process, multi-process and multi-machine runs (DDP on GPUs or on CPUs).

Detectron2 0.6's ``launch()`` asserts that CUDA exists and always builds an NCCL process group,
so no distributed code could run on a CPU machine. This launcher starts the same kind of job
three ways:

* ``--num-gpus N [--num-machines M --machine-rank R --dist-url tcp://HOST:PORT]``: this process
  spawns N workers (one per GPU) and watches them; the M machines meet at ``--dist-url``
  (``auto``: a free local port, one machine only);
* ``torchrun`` (or any launcher that sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``): this
  process *is* one worker, the process group comes from ``env://`` (``MASTER_ADDR`` /
  ``MASTER_PORT`` or torchrun's rendezvous) and ``--num-gpus`` / ``--dist-url`` are ignored;
* neither: the job runs in this process.

The backend follows the device, never a flag: NCCL when CUDA is available (each worker owns
GPU ``LOCAL_RANK``), gloo otherwise, so ``--num-gpus 2`` on a CPU machine runs two CPU
processes. To run CPU processes on a GPU machine, hide the GPUs (``CUDA_VISIBLE_DEVICES=""``).

Failures end the whole job instead of hanging it: the spawning process waits on all workers
and, as soon as one exits abnormally (an exception, a kill, an out-of-memory), stops the others
(SIGTERM, then SIGKILL) and raises :class:`WorkerFailedError` naming the rank; ranks blocked in
a collective on another machine give up after the process-group timeout (``--dist-timeout``).
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from datetime import timedelta
from typing import Any, Callable, Dict, Optional, Sequence

import torch
import torch.distributed as dist

from .. import compat  # noqa: F401

from detectron2.utils import comm

from ..errors import ConfigError, MedSegInputError

__all__ = [
    "DEFAULT_TIMEOUT", "WorkerFailedError", "launch", "torchrun_env", "distributed_backend",
    "init_distributed", "find_free_port",
]

logger = logging.getLogger(__name__)

# Detectron2's default; a rank that waits longer than this in a collective gives up.
DEFAULT_TIMEOUT = timedelta(minutes=30)
# Exit status of a worker that stopped on bad input (the message is already printed).
_INPUT_ERROR_EXIT = 2


class WorkerFailedError(RuntimeError):
    """A worker of a multi-process job failed; the other workers were stopped."""


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def distributed_backend() -> str:
    """NCCL when this process can use CUDA, gloo otherwise."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def torchrun_env() -> Optional[Dict[str, int]]:
    """The worker coordinates set by torchrun (or SLURM + torchrun), or None outside one."""
    if not all(k in os.environ for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
        return None
    world = int(os.environ["WORLD_SIZE"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    rank = int(os.environ["RANK"])
    if world % local_world:
        raise ConfigError(
            f"torchrun: WORLD_SIZE={world} is not a multiple of LOCAL_WORLD_SIZE={local_world}; every machine "
            "must run the same number of processes (--nproc-per-node)"
        )
    return {
        "rank": rank,
        "local_rank": int(os.environ["LOCAL_RANK"]),
        "world_size": world,
        "local_world_size": local_world,
        "machine_rank": int(os.environ.get("GROUP_RANK", rank // local_world)),
    }


def init_distributed(
    backend: str, init_method: str, world_size: int, rank: int, local_rank: int, local_world_size: int,
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Create the process group and Detectron2's per-machine group; bind the worker's GPU."""
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"rank {rank}: local rank {local_rank} needs GPU {local_rank}, but only "
                f"{torch.cuda.device_count()} are visible (--num-gpus / --nproc-per-node too large?)"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method=init_method, world_size=world_size, rank=rank, timeout=timeout)
    # comm.get_local_rank() (used for device ids and per-machine work) needs this group; every
    # rank must create every machine's group, in the same order
    num_machines = world_size // local_world_size
    for m in range(num_machines):
        group = dist.new_group(list(range(m * local_world_size, (m + 1) * local_world_size)))
        if m == rank // local_world_size:
            comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()


def _run_worker(main_func: Callable, args: Sequence[Any], rank: int) -> Any:
    """Run ``main_func`` in a worker; bad input ends the worker with one line, not a traceback."""
    try:
        result = main_func(*args)
    except MedSegInputError as e:
        # bad input hit on any rank (often on all of them): one line each, no traceback
        print(f"error (rank {rank}): {e}", file=sys.stderr, flush=True)
        sys.exit(_INPUT_ERROR_EXIT)
    # only after success: with a failed peer, tearing down could block on it
    if dist.is_initialized():
        dist.destroy_process_group()
    return result


def _spawned_worker(
    local_rank: int, main_func: Callable, world_size: int, num_gpus_per_machine: int, machine_rank: int,
    dist_url: str, args: Sequence[Any], timeout: timedelta,
) -> None:
    rank = machine_rank * num_gpus_per_machine + local_rank
    init_distributed(distributed_backend(), dist_url, world_size, rank, local_rank, num_gpus_per_machine, timeout)
    _run_worker(main_func, args, rank)


def _describe_exit(exit_code: int) -> str:
    if exit_code < 0:
        try:
            return f"was killed by signal {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"was killed by signal {-exit_code}"
    if exit_code == _INPUT_ERROR_EXIT:
        return "stopped on bad input (message above)"
    return f"exited with status {exit_code}"


def launch(
    main_func: Callable,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: Optional[str] = None,
    args: Sequence[Any] = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> Any:
    """Run ``main_func(*args)`` on every worker of the job (see the module docstring).

    Returns ``main_func``'s result when it runs in this process (one worker or torchrun);
    a spawning process returns None after all its workers finished.
    """
    env = torchrun_env()
    if env is not None:
        if env["world_size"] > 1 or not dist.is_initialized():
            init_distributed(
                distributed_backend(), "env://", env["world_size"], env["rank"], env["local_rank"],
                env["local_world_size"], timeout,
            )
        return _run_worker(main_func, args, env["rank"])

    if num_gpus_per_machine < 1 or num_machines < 1 or not 0 <= machine_rank < num_machines:
        raise ConfigError(
            f"--num-gpus {num_gpus_per_machine} --num-machines {num_machines} --machine-rank {machine_rank}: "
            "need at least one process per machine and 0 <= machine rank < number of machines"
        )
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        return main_func(*args)
    if distributed_backend() == "nccl" and num_gpus_per_machine > torch.cuda.device_count():
        raise ConfigError(
            f"--num-gpus {num_gpus_per_machine}: only {torch.cuda.device_count()} GPUs are visible on this machine"
        )
    if not dist_url or dist_url == "auto":
        if num_machines > 1:
            raise ConfigError("--dist-url auto only works on one machine: give tcp://<machine 0>:<port>")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    return _spawn_and_watch(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout)


def _spawn_and_watch(
    main_func: Callable, world_size: int, num_gpus_per_machine: int, machine_rank: int, dist_url: str,
    args: Sequence[Any], timeout: timedelta,
) -> None:
    import torch.multiprocessing as mp

    ctx = mp.start_processes(
        _spawned_worker,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, tuple(args), timeout),
        nprocs=num_gpus_per_machine, join=False, daemon=False, start_method="spawn",
    )
    first = machine_rank * num_gpus_per_machine
    for local_rank, pid in enumerate(ctx.pids()):
        rank = first + local_rank
        print(f"medseg launch: rank {rank} of {world_size} started (pid {pid})", file=sys.stderr, flush=True)
    try:
        # join() returns False while workers run, raises as soon as one fails after stopping
        # the others (SIGTERM, then SIGKILL after a grace period)
        while not ctx.join(grace_period=5.0):
            pass
    except mp.ProcessExitedException as e:
        rank = first + e.error_index
        raise WorkerFailedError(
            f"rank {rank} of {world_size} (pid {e.error_pid}) {_describe_exit(e.exit_code)}; the other ranks on this "
            "machine were stopped. Continue from the last checkpoint with --resume."
        ) from None
    except mp.ProcessRaisedException as e:
        rank = first + e.error_index
        raise WorkerFailedError(
            f"rank {rank} of {world_size} (pid {e.error_pid}) failed with the error below; the other ranks on this "
            f"machine were stopped. Continue from the last checkpoint with --resume.{e}"
        ) from None
    except KeyboardInterrupt:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
        for p in ctx.processes:
            p.join(10)
            if p.is_alive():
                p.kill()
        raise
