"""Writes `sd2_dpm_solver.npz`: Stable Diffusion 2's own `DPMSolverSampler` run by the original code on
the analytic model of `tests/diffusion/analytic_model.py`, for `tests/diffusion/test_sd2_dpm_solver.py`.

    git clone https://github.com/Stability-AI/stablediffusion /tmp/stablediffusion
    git -C /tmp/stablediffusion checkout cf1d67a6fd5ea1aa600c4df58e5b47da45f6bdbf
    .venv/bin/python tests/reference/generate_sampler_fixtures.py --stablediffusion /tmp/stablediffusion

Only `ldm/models/diffusion/dpm_solver/` of the checkout runs (it needs torch and tqdm); the sha256 of
the files that ran is stored beside the arrays.
"""
import argparse
import hashlib
import pathlib
import sys

import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.diffusion.analytic_model import SCHEDULE, SHAPE, model  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent / "sd2_dpm_solver.npz"
CASES = ((7, "eps"), (20, "eps"), (12, "v"))  # (steps, parameterization): < 15 steps ends first order


class CompVisModel:
    """What `DPMSolverSampler` reads of an SD 2 `LatentDiffusion`; records each call."""

    def __init__(self, parameterization):
        self.parameterization = parameterization
        self.alphas_cumprod = torch.from_numpy(np.array(SCHEDULE.alphas_cumprod, np.float32))
        self.betas = torch.from_numpy(np.array(SCHEDULE.betas, np.float32))
        self.device = torch.device("cpu")
        self.times, self.inputs = [], []

    def apply_model(self, x, t, cond):
        self.times.append(float(t[0]))
        self.inputs.append(x.numpy())
        return model(x, t, torch)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stablediffusion", type=pathlib.Path, required=True,
                        help="a checkout of Stability-AI/stablediffusion at cf1d67a")
    args = parser.parse_args()
    solver_dir = args.stablediffusion / "ldm" / "models" / "diffusion" / "dpm_solver"
    sys.path.insert(0, str(args.stablediffusion))
    from ldm.models.diffusion.dpm_solver.sampler import DPMSolverSampler

    arrays = {f"sha256_{name}": np.asarray(hashlib.sha256((solver_dir / name).read_bytes()).hexdigest())
              for name in ("dpm_solver.py", "sampler.py")}
    for steps, parameterization in CASES:
        rng = np.random.default_rng(steps)
        x_T = rng.standard_normal(SHAPE).astype(np.float32)
        inner = CompVisModel(parameterization)
        sampler = DPMSolverSampler(inner, device=torch.device("cpu"))
        out, _ = sampler.sample(steps, SHAPE[0], SHAPE[1:], conditioning=torch.zeros(SHAPE[0], 1),
                                x_T=torch.from_numpy(x_T), verbose=False)
        key = f"{parameterization}_{steps}"
        arrays.update({f"{key}/x_T": x_T, f"{key}/times": np.asarray(inner.times, np.float32),
                       f"{key}/inputs": np.stack(inner.inputs), f"{key}/out": out.numpy()})
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
