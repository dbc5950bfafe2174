"""Multi-host detection, and two processes on localhost training like one (gloo CPU collectives).

The two-process test starts this file as a script twice (`python -m tests.parallel.test_distributed
worker ...`): each process has 2 CPU devices, loads its half of every global batch and runs the
toy data-parallel train step of `test_mesh` on the 4-device global mesh.
"""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from ldm_jax.parallel import distributed

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 3


def test_single_host_environment_is_not_distributed():
    assert distributed.distributed_settings({"HOME": "/root"}) is None
    one_process = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "1"}
    assert distributed.distributed_settings(one_process) is None
    assert distributed.distributed_settings({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "1",
                                             "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}) is None
    assert distributed.distributed_settings({"TPU_WORKER_HOSTNAMES": "localhost"}) is None
    assert distributed.maybe_initialize_distributed({"HOME": "/root"}) is False


def test_jax_environment_variables_are_read():
    settings = distributed.distributed_settings({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
                                                 "JAX_PROCESS_ID": "2", "JAX_LOCAL_DEVICE_IDS": "0,1"})
    assert settings.initialize_kwargs() == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                                            "process_id": 2, "local_device_ids": (0, 1)}
    with pytest.raises(ValueError, match="JAX_PROCESS_ID is not"):
        distributed.distributed_settings({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4"})
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES must be an integer"):
        distributed.distributed_settings({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "four"})


def test_schedulers_are_left_to_jax_cluster_detection():
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
             "SLURM_LOCALID": "0"}
    assert distributed.distributed_settings(slurm).source == "SLURM"
    assert distributed.distributed_settings(slurm).initialize_kwargs() == {}
    assert distributed.distributed_settings({"OMPI_MCA_orte_hnp_uri": "1;tcp://10.0.0.1:1",
                                             "OMPI_COMM_WORLD_SIZE": "8"}).source == "Open MPI"
    assert distributed.distributed_settings({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}).source == "TPU pod"


def test_explicit_settings_win_and_are_checked():
    class Flags:
        coordinator_address = "127.0.0.1:9999"
        num_processes = 2
        process_id = 1
        local_device_ids = None

    settings = distributed.distributed_settings(Flags())
    assert settings.source == "explicit" and settings.process_id == 1
    with pytest.raises(ValueError, match="needs coordinator_address and process_id"):
        distributed.distributed_settings({"num_processes": 2})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _global_batches():
    from tests.parallel.test_mesh import toy_batches
    return toy_batches(1, batch_size=8) * STEPS


def worker(process_id: int, port: int, checkpoint_dir: str) -> None:
    """One of two processes: join, train STEPS steps on the global mesh, checkpoint and restore the
    state across both processes, print the losses and what came back as JSON."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    assert distributed.maybe_initialize_distributed(
        {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(process_id)},
        initialization_timeout=60)
    from ldm_jax.parallel import mesh as mesh_lib
    from tests.parallel.test_mesh import toy_init, toy_train_step

    assert jax.process_count() == 2 and jax.device_count() == 4 and jax.local_device_count() == 2
    mesh = mesh_lib.make_mesh({"data": -1})
    rules = mesh_lib.logical_axis_rules(mesh_lib.default_mesh_config())
    rows = distributed.per_process_batch_size(8)
    local = [{k: v[process_id * rows:(process_id + 1) * rows] for k, v in b.items()} for b in _global_batches()]
    rng = jax.random.key(0)
    # Every process initialises from the same key: the parameters agree without a broadcast.
    state = mesh_lib.init_sharded(toy_init, mesh, rules, rng, _global_batches()[0])
    shardings = jax.tree.map(lambda x: x.sharding, state)
    step = mesh_lib.jit_train_step(toy_train_step, shardings, mesh_lib.batch_sharding(mesh), mesh, rules)
    losses = []
    for i, batch in enumerate(local):
        state, metrics = step(state, distributed.global_batch(batch, mesh_lib.batch_sharding(mesh)),
                              jax.random.fold_in(rng, i))
        losses.append(float(metrics["loss"]))
    from jax.experimental import multihost_utils

    from ldm_jax.training import checkpointing
    kernel = multihost_utils.process_allgather(state.params["conv_mid"]["kernel"], tiled=True)
    with checkpointing.Checkpointer(checkpoint_dir) as checkpointer:
        checkpointer.save(STEPS, state, {"process": process_id}, {"run": "toy"})
        checkpointer.wait()
        abstract = mesh_lib.abstract_sharded_state(toy_init, mesh, rules, rng, _global_batches()[0])
        restored, data_state = checkpointer.restore(abstract)
    restored_kernel = multihost_utils.process_allgather(restored.params["conv_mid"]["kernel"], tiled=True)
    print("RESULT " + json.dumps({
        "losses": losses, "kernel_sum": float(np.sum(kernel)), "data_state": data_state,
        "restored_equal": bool(np.array_equal(kernel, restored_kernel)), "restored_step": int(restored.step),
        "preempted": checkpointing.preemption_requested(STEPS)}), flush=True)
    jax.distributed.shutdown()


def _run_workers(checkpoint_dir, timeout: float = 120.0) -> list[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_", "SLURM_", "OMPI_", "TPU_"))}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-m", "tests.parallel.test_distributed", "worker", str(i), str(port),
                               str(checkpoint_dir)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    deadline = time.monotonic() + timeout
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        pytest.fail(f"the two processes did not finish within {timeout} s: "
                    + " | ".join((p.communicate()[0] or "")[-2000:] for p in procs))
    for i, (proc, output) in enumerate(zip(procs, outputs)):
        if proc.returncode != 0:
            pytest.fail(f"process {i} exited with {proc.returncode}:\n{output[-4000:]}")
    return outputs


def test_two_processes_train_and_checkpoint_like_one(tmp_path):
    import jax

    from ldm_jax.parallel import mesh as mesh_lib
    from tests.parallel.test_mesh import run_steps, toy_init, toy_train_step

    outputs = _run_workers(tmp_path / "checkpoints")
    results = [json.loads(line[len("RESULT "):]) for out in outputs for line in out.splitlines()
               if line.startswith("RESULT ")]
    assert len(results) == 2, outputs
    mesh = mesh_lib.make_mesh({"data": 4}, jax.devices()[:4])
    rules = mesh_lib.logical_axis_rules(mesh_lib.default_mesh_config())
    losses, state = run_steps(mesh, rules, toy_init, toy_train_step, _global_batches())
    for process_id, result in enumerate(results):
        # Both processes see the same global losses, equal to one process's on the same global batches.
        np.testing.assert_allclose(result["losses"], losses, rtol=1e-5)
        np.testing.assert_allclose(result["kernel_sum"], float(np.sum(state.params["conv_mid"]["kernel"])),
                                   rtol=1e-4, atol=1e-5)
        # The checkpoint written by both comes back whole, each process with its own data state.
        assert result["restored_equal"] and result["restored_step"] == STEPS
        assert result["data_state"] == {"process": process_id}
        assert result["preempted"] is False


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
