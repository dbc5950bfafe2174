"""A tqdm progress bar driven from inside a compiled sampling loop via `jax.debug.callback`.

The sampling loop reports at most ~20 times per run (every max(1, steps // 20) steps). Measured on
CPU with the 2.3M-parameter fixture UNet (about 14 ms per guided step, batch 8, 50 DDIM steps) the
bar costs 2-5% of the run (about 2% of that is the callback machinery, the rest tqdm); with a
real-sized UNet (100+ ms per step) it is well under 1%. `progress=False` compiles no callback.
"""
import threading


class ScanProgressBar:
    """Opens a bar when step 0 reports, advances it, closes it after the last step."""

    def __init__(self, description: str = "sampling"):
        self.description = description
        self._bar = None
        self._lock = threading.Lock()  # callbacks of a multi-device program may come from several threads

    def update(self, step, total) -> None:
        step, total = int(step), int(total)
        with self._lock:
            if self._bar is None and step != 0 and step + 1 >= total:
                return  # another device's report of a run that already finished
            if self._bar is None or (step == 0 and self._bar.n > 1):
                self.close()
                from tqdm.auto import tqdm
                self._bar = tqdm(total=total, desc=self.description, leave=False)
            if step + 1 > self._bar.n:
                self._bar.update(step + 1 - self._bar.n)  # tqdm throttles redraws (mininterval)
            if step + 1 >= total:
                self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
