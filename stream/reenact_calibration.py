"""The calibration of a live reenactment: the driver latents its motion model is learned from, that model's fit
(`directions.reenact.fit_driver`) in a background thread, and the checks of the options against the window.

    window = CalibrationWindow(size=CALIBRATION, seconds=CALIBRATION_S, name="reenact-fit-<stream>")
    window.add(w, t)                 # a driver latent float32 [num_ws, w_dim] captured at t (s); spaced in time
    window.start_fit(options)        # once `window.full` (and the target inverted): RPCA off the frame's thread
    window.poll(block, options)      # -> (DriverFit, seconds) once done with these options' fit fields, else None

`stream.reenact_live.ReenactSession` owns one per stream.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import numpy as np

from stream.controls import PASTE_MODES as LIVE_PASTE_MODES  # live reenactment pastes as the live edit does
CALIBRATION = 40           # driver latents the motion model is learned from
CALIBRATION_S = 4.0        # ... collected over at least this many seconds (the user moves meanwhile)
MAX_CALIBRATION = 200      # most calibration latents a hosted door (page, Gradio) takes (each [num_ws, w_dim] float32)
MAX_CALIBRATION_S = 60.0   # ... over at most this many seconds


class CalibrationWindow:
    """The driver latents a motion model is learned from (one every `seconds / (size − 1)` s at most) and its fit."""

    def __init__(self,
                 size: int = CALIBRATION,                  # driver latents the motion model is learned from
                 seconds: float = CALIBRATION_S,           # ... spread over at least this many seconds
                 name: str = "reenact-fit"):               # the fit thread's name
        self.size = int(size)
        self.seconds = float(seconds)
        self.name = name
        self.latents: list = []                # float32 [num_ws, w_dim] each, oldest first
        self.t_last: float | None = None       # capture time of the newest latent kept
        self.fitting: Future | None = None     # the fit running now: Future of (fit, options, seconds)

    @property
    def full(self) -> bool:
        return len(self.latents) >= self.size

    def add(self, w: np.ndarray, t: float) -> bool:
        """Keep latent `w` captured at `t` (s) unless it follows the last one kept too soon; True when kept."""
        spacing = self.seconds / max(1, self.size - 1)
        if self.t_last is not None and t - self.t_last < spacing:
            return False
        self.latents.append(w)
        self.t_last = t
        return True

    def start_fit(self, options) -> None:
        """fit_driver on the latents in a background thread (RPCA takes seconds on a CPU)."""
        from directions.reenact import fit_driver  # noqa: PLC0415

        import torch  # noqa: PLC0415

        latents = torch.from_numpy(np.stack(self.latents)).float()
        future: Future = Future()

        def work():
            t0 = time.perf_counter()
            try:
                fit = fit_driver(latents, options)
            except BaseException as exc:  # noqa: BLE001 -- reported through the future
                future.set_exception(exc)
                return
            future.set_result((fit, options, time.perf_counter() - t0))

        self.fitting = future
        threading.Thread(target=work, name=self.name, daemon=True).start()

    def poll(self, block: bool, options) -> tuple | None:
        """(fit, seconds) once the running fit is done (block=True waits for it) and it was made with the fit fields
        of `options`; None while it runs, when none runs, or when the options changed meanwhile (it is then started
        again with them). Raises what the fit raised."""
        future = self.fitting
        if future is None or (not block and not future.done()):
            return None
        self.fitting = None
        fit, used, seconds = future.result()
        if fit_fields(used) != fit_fields(options):  # changed while fitting: fit again with them
            self.start_fit(options)
            return None
        return fit, seconds

    def reset(self) -> None:
        """Forget the latents (a recalibration); a running fit is dropped."""
        self.latents, self.t_last, self.fitting = [], None, None


def fit_fields(options) -> dict:
    """The options the motion model depends on (everything but β)."""
    return {k: v for k, v in options.to_dict().items() if k != "beta"}

def can_reenact(info) -> bool:
    """Whether an editor (its `EditorInfo`) can reenact: networks loaded, not the network-free demo."""
    return bool(info.available) and info.state != "demo"


def check_paste_mode(mode: str) -> str:
    if mode not in LIVE_PASTE_MODES:
        raise ValueError(f"live reenactment pastes with {' or '.join(LIVE_PASTE_MODES)}, not {mode!r}; "
                         f"pick one of them (the clip door also writes the generated face with 'none')")
    return mode


def check_live_options(options, calibration: int, num_ws: int | None):
    """The options, checked against the calibration window (and the generator's W+ layers when known)."""
    from directions.reenact import ReenactOptions, resolve_layers  # noqa: PLC0415

    if not isinstance(options, ReenactOptions):
        raise ValueError(f"options must be directions.reenact.ReenactOptions, got {type(options).__name__}")
    if calibration < 2:
        raise ValueError(f"calibration must be >= 2 driver latents, got {calibration}")
    if options.method != "none" and options.rank > calibration - 1:
        raise ValueError(f"rank {options.rank} needs more than {calibration} calibration latents; pass a rank of at "
                         f"most {calibration - 1} or a longer calibration")
    if options.reference is not None and options.reference >= calibration:
        raise ValueError(f"reference {options.reference} is past the calibration window (latents 0 to "
                         f"{calibration - 1}); pass a smaller --reference or a longer calibration")
    if num_ws is not None:
        resolve_layers(options.layers, num_ws)
    return options
