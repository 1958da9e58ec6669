"""The Gradio app: photos → micromotion clips, clip → edited clip with its audio, webcam → live edit, and
reenactment: driver clip + target photo → the target moving like the driver, or the webcam driving the photo.

`build_app` only wires the work to Gradio components, with the words of `web.gradio_status` beside each output. The
work lives in plain functions (testable without a browser): uploads and raw payloads in `web.gradio_uploads`
(`Limits`, `check_image_upload`, `check_video_upload`), the edit tabs in `web.gradio_edit` (`micromotion_frames`,
`render_image`, `edit_clip`, `WebcamSession`), reenactment in `web.gradio_reenact`. All frames are uint8
[H, W, 3] BGR except at the Gradio boundary (RGB).

Every event is wired with `preprocess=False`: the handlers get Gradio's raw payloads (FileData dicts, numbers,
strings) and check them there, so a bad upload gets this app's one-line message (never Gradio's "Could not preprocess
input" with temporary paths), and α is bounded only by `stream.controls.MAX_ALPHA`, as in every door -- never by
the range a slider happened to be built with (a direction's suggested range is a UI hint).
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from web.gradio_edit import WebcamSession, alpha_slider_for, edit_clip, make_controls, render_image
from web.gradio_uploads import Limits, UploadRefused, upload_list, upload_name, whole_number

log = logging.getLogger("web.gradio")


PHOTO_HINT = "Upload one or more face photos, pick a direction and press Render."
CLIP_HINT = "Upload a clip with a face, pick a direction and press Edit clip."
WEBCAM_HINT = "Waiting for the camera: click it, allow it and press record; the live state shows here."


def one_line(exc: BaseException, what: str) -> str:
    """The user's message for an exception met while serving `what`: the project's own one-line refusals as they
    are; anything else only by its type (its text may hold temporary paths), the details go to the log."""
    if isinstance(exc, ValueError):            # UploadRefused, controls, counts: written for users
        from web.gradio_status import file_names_only

        return file_names_only(str(exc))
    if isinstance(exc, FileNotFoundError):     # a file that vanished between upload and use: paths stay private
        return f"the {what} was not received; upload it again"
    log.error("%s failed", what, exc_info=exc)
    return f"the {what} could not be processed ({type(exc).__name__}); the server log has the details"


def build_app(effect, limits: Limits = Limits()):
    """The Gradio Blocks app around `effect` (tabs: Photo, Clip, Webcam, Reenact, Reenact live), each with a status
    beside its output; the banner says the effect's state (`web.gradio_status.effect_lines`)."""
    import gradio as gr

    from web.gradio_status import clip_lines, effect_lines, markdown, result_status, tab_status

    names = list(effect.available_directions)
    default = names[0] if names else None
    banner = effect_lines(effect.info)

    def refuse(exc: BaseException, what: str):
        raise gr.Error(one_line(exc, what), print_exception=False) from None

    def on_photos(files, direction, alpha, n_frames, progress=gr.Progress()):
        try:
            items = upload_list(files)
            if not items:
                raise UploadRefused("no photo given; upload one or more face photos (jpg or png)")
            if len(items) > limits.max_photos:
                raise UploadRefused(f"{len(items)} photos given, over the limit of {limits.max_photos} at once; "
                                    f"upload at most {limits.max_photos}")
            n = whole_number("frames", n_frames, 2, limits.max_photo_frames)
            make_controls(effect, direction or None, alpha)      # refuse bad controls before any work
        except Exception as exc:  # noqa: BLE001 -- the door's boundary: one line, never a traceback
            refuse(exc, "photo")
        lines, refused, gifs, downloads, thumbs = [], [], [], [], []
        for k, item in enumerate(items):
            name = upload_name(item)

            def step(fraction: float, text: str, k: int = k, name: str = name) -> None:
                progress((k + fraction) / len(items), desc=f"photo {k + 1} of {len(items)} '{name}': {text}")

            try:
                out = render_image(effect, item, direction or None, alpha, n, limits=limits, progress=step)
            except UploadRefused as exc:
                refused.append(f"not used: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001
                refuse(exc, "photo")
            lines.append(out["line"])
            gifs.append((str(out["gif"]), out["name"]))
            downloads += [str(out["video"]), str(out["gif"])]
            thumbs += [(np.ascontiguousarray(f[..., ::-1]), f"{out['name']} t={i / (n - 1):.2f}")
                       for i, f in enumerate(out["thumbs"])]
        if not gifs:
            raise gr.Error(" / ".join(r.removeprefix("not used: ") for r in refused), print_exception=False)
        return result_status(effect.info, lines + refused), gifs, downloads, thumbs

    def on_clip(video, direction, alpha, animate, period_s, progress=gr.Progress()):
        try:
            controls = make_controls(effect, direction or None, alpha, animate=animate, period_s=period_s)
            out_path = Path(tempfile.mkdtemp(prefix="micromotion-")) / "edited.mp4"
            result = edit_clip(effect, video, out_path, controls,
                               progress=lambda f, text: progress(f, desc=text), limits=limits)
        except Exception as exc:  # noqa: BLE001 -- the door's boundary (UploadRefused while decoding included)
            refuse(exc, "clip")
        return str(result["path"]), result_status(effect.info, clip_lines(result))

    def on_webcam(frame, direction, alpha, animate, period_s, session):
        try:
            make_controls(effect, direction or None, alpha, animate=animate, period_s=period_s)
            rgb = webcam_frame(cam, frame)
        except Exception as exc:  # noqa: BLE001
            refuse(exc, "camera frame")
        if session is None:
            session = WebcamSession(effect)
        out = session.step(rgb, direction or None, alpha, animate, period_s)
        return out, session.line, session

    def close_session(session):
        if session is not None:
            session.close()

    with gr.Blocks(title="micromotion") as app:
        gr.Markdown("# micromotion\nStyleGAN micromotions of a face: smile, eyes closing, head turn, anger, aging.")
        if banner:
            gr.Markdown(markdown(f"**{line}**" for line in banner), elem_id="banner")

        def direction_picker():
            return gr.Dropdown(choices=names, value=default, label="direction", info=None if names else
                               "none installed" if effect.info.available else "none: no networks to edit with")

        def alpha_slider(direction_box):
            """An α slider whose range and value follow the direction picked in `direction_box`."""
            slider = gr.Slider(**alpha_slider_for(effect, default), label="α (strength)",
                               info="suggested range of the chosen direction")
            direction_box.change(lambda d: gr.Slider(**alpha_slider_for(effect, d or None)), direction_box, slider,
                                 api_visibility="private", queue=False)
            return slider

        with gr.Tab("Photo"):
            with gr.Row():
                with gr.Column():
                    photos = gr.File(file_count="multiple", file_types=["image"],
                                     label=f"face photos (up to {limits.max_photos})", elem_id="photo-input")
                    p_dir = direction_picker()
                    p_alpha = alpha_slider(p_dir)
                    p_n = gr.Slider(4, limits.max_photo_frames, value=16, step=1, label="frames",
                                    elem_id="photo-frames")
                    p_go = gr.Button("Render micromotion", variant="primary")
                with gr.Column():
                    p_status = gr.Markdown(tab_status(effect.info, PHOTO_HINT), elem_id="photo-status", min_height=90,
                                           container=True, padding=True)
                    p_gifs = gr.Gallery(label="micromotions (GIF), one per photo", columns=2, height="max-content",
                                        object_fit="contain")
                    p_files = gr.File(label="downloads: mp4 + GIF", file_count="multiple")
                    p_frames = gr.Gallery(label="frames: V0 + α·t·ΔV, t = 0 → 1", columns=4, height="max-content",
                                          object_fit="contain")
            p_go.click(on_photos, [photos, p_dir, p_alpha, p_n], [p_status, p_gifs, p_files, p_frames],
                       api_name="photo", preprocess=False, show_progress_on=p_status)

        with gr.Tab("Clip"):
            with gr.Row():
                with gr.Column():
                    clip = gr.Video(label="clip (its audio is kept)", sources=["upload"], elem_id="clip-input")
                    c_dir = direction_picker()
                    c_alpha = alpha_slider(c_dir)
                    c_anim = gr.Checkbox(value=True, label="animate (t sweeps 0 → 1 → 0)")
                    c_period = gr.Slider(0.5, 6.0, value=2.0, step=0.1, label="period (s)")
                    c_go = gr.Button("Edit clip", variant="primary")
                with gr.Column():
                    c_status = gr.Markdown(tab_status(effect.info, CLIP_HINT), elem_id="clip-status", min_height=90,
                                           container=True, padding=True)
                    c_out = gr.Video(label="edited clip")
            c_go.click(on_clip, [clip, c_dir, c_alpha, c_anim, c_period], [c_out, c_status], api_name="clip",
                       preprocess=False, show_progress_on=c_status)

        with gr.Tab("Webcam"):
            session = gr.State(None, time_to_live=3600, delete_callback=close_session)
            with gr.Row():
                cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="camera")
                with gr.Column():
                    w_out = gr.Image(label="edited", elem_id="webcam-output")
                    w_status = gr.Markdown(tab_status(effect.info, WEBCAM_HINT),
                                           elem_id="webcam-status")
            with gr.Row():
                w_dir = direction_picker()
                w_alpha = alpha_slider(w_dir)
                w_anim = gr.Checkbox(value=True, label="animate")
                w_period = gr.Slider(0.5, 6.0, value=2.0, step=0.1, label="period (s)")
            cam.stream(on_webcam, [cam, w_dir, w_alpha, w_anim, w_period, session], [w_out, w_status, session],
                       stream_every=0.1, concurrency_limit=4, api_name="webcam", preprocess=False,
                       show_progress="hidden")

        reenact_tabs(gr, effect, limits, refuse)
    return app


REENACT_HINT = ("Upload a driver clip (its face's motion and audio drive the photo) and a target photo, then press "
                "Reenact.")
REENACT_LIVE_HINT = ("Upload a target photo, then start the camera: it calibrates on your face (start with a "
                     "neutral face, then move your head), then drives the photo.")


def reenact_option_inputs(gr, effect, live: bool) -> list:
    """The options a reenactment depends on, as inputs in `web.gradio_reenact.reenact_options`'s order:
    rank, layers, β, reference, smoothing, method, paste mode. The sliders' ranges are hints: the handlers take
    what `reenact_options` takes (rank <= MAX_RANK, smoothing <= MAX_SMOOTHING, any finite β)."""
    from web.gradio_reenact import LIVE_PASTE_MODES, METHODS, PASTE_MODES

    num_ws = getattr(getattr(effect, "editor", None), "num_ws", None)
    every = f"all {num_ws}" if num_ws else "all"
    reference = ("calibration latent of the neutral pose; empty: the first" if live else
                 "driver frame of the neutral pose; empty: the first frame with a face")
    return [gr.Slider(1, 16, value=4, step=1, label="rank", info="motion subspace dimension per W+ layer"),
            gr.Textbox(value="", label="layers A:B", placeholder=f"e.g. 0:8 (empty: {every} W+ layers)",
                       info="W+ layers that move: A to B−1"),
            gr.Number(value=1.0, label="β", info="strength of the motion (1: the driver's amplitude)"),
            gr.Textbox(value="", label="reference", placeholder="empty: the first", info=reference),
            gr.Slider(0, 10, value=0, step=0.5, label="smoothing σ (frames)",
                      info="temporal Gaussian" + (" (looks one latent ahead live)" if live else "")),
            gr.Radio(list(METHODS), value="rpca", label="method",
                     info="robust PCA subspace, plain PCA, or the raw offsets"),
            gr.Radio(list(LIVE_PASTE_MODES if live else PASTE_MODES), value="residual", label="paste",
                     info="residual: photo + G(w) − G(V); replace: G(w)" + ("" if live else "; none: G(w) alone"))]


def reenact_tabs(gr, effect, limits: Limits, refuse) -> None:
    """The "Reenact" tab (driver clip + target photo → video) and the "Reenact live" tab (the webcam drives the
    photo), inside the app's Blocks. Their work is `web.gradio_reenact`'s."""
    from stream.controls import finite
    from stream.reenact_calibration import MAX_CALIBRATION, MAX_CALIBRATION_S
    from web.gradio_reenact import (NotReenacted, ReenactNetworks, ReenactWebcam, check_paste_mode, live_key,
                                    reenact_clip, reenact_options)
    from web.gradio_status import markdown, reenact_lines, reenact_live_line, reenact_tab_status

    networks = ReenactNetworks(effect)

    def on_reenact(driver, target, rank, layers, beta, reference, smoothing, method, paste_mode,
                   progress=gr.Progress()):
        try:
            options = reenact_options(rank, layers, beta, reference, smoothing, method)
            result = reenact_clip(networks, driver, target, options, check_paste_mode(paste_mode), limits=limits,
                                  progress=lambda fraction, text: progress(fraction, desc=text))
        except NotReenacted as exc:     # what the work found: said beside the output
            return None, markdown([f"**not reenacted**: {exc}"]), None, None
        except Exception as exc:  # noqa: BLE001 -- the door's boundary: one line, never a traceback
            refuse(exc, "reenactment")
        video = str(result["video"])
        return video, markdown(reenact_lines(result)), [video, str(result["sidecar"])], result["summary"]

    def on_reenact_camera(frame, target, rank, layers, beta, reference, smoothing, method, paste_mode,
                          calibration, calibration_s, live):
        """One webcam frame. Never raises (it runs ten times a second): what is wrong is the status line."""
        try:
            options = reenact_options(rank, layers, beta, reference, smoothing, method)
            check_paste_mode(paste_mode, live=True)
            calibration = whole_number("calibration latents", calibration, 2, MAX_CALIBRATION)
            calibration_s = finite("calibration seconds", calibration_s, 0.0, MAX_CALIBRATION_S)
            rgb = webcam_frame(r_cam, frame)
            if not target:
                raise UploadRefused("no target photo given; upload the face photo the camera should drive")
            if live is None or not live.fits(live_key(target, paste_mode, calibration, calibration_s), options):
                if live is not None:
                    live.close()
                live = None       # a constructor that raises leaves no closed session in the state
                live = ReenactWebcam(effect, target, options, paste_mode, calibration, calibration_s, limits)
        except Exception as exc:  # noqa: BLE001 -- bad options, a refused target photo, a bad frame
            return None, reenact_live_line(None, problem=one_line(exc, "camera frame")), live
        out = live.step(rgb, options)
        return out, live.line, live

    def on_recalibrate(live):
        if live is None:
            return reenact_live_line(None, problem="nothing to recalibrate yet: upload a target photo and start "
                                                   "the camera")
        live.recalibrate()
        return "**calibrating**: recalibrating: start with a neutral face, then move your head"

    def close_live(live):
        if live is not None:
            live.close()

    with gr.Tab("Reenact"):
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    driver = gr.Video(label="driver clip (motion + audio)", sources=["upload"],
                                      elem_id="reenact-driver", height=280)
                    target = gr.Image(label="target photo (face to animate)", sources=["upload"],
                                      type="filepath", elem_id="reenact-target", height=280)
                options = reenact_option_inputs(gr, effect, live=False)
                go = gr.Button("Reenact", variant="primary")
            with gr.Column():
                status = gr.Markdown(reenact_tab_status(effect.info, REENACT_HINT), elem_id="reenact-status",
                                     min_height=90, container=True, padding=True)
                out = gr.Video(label="the target, driven (the driver's frames, rate and audio)",
                               elem_id="reenact-output", height=420)
                files = gr.File(label="downloads: mp4 + its metadata (.json)", file_count="multiple")
                summary = gr.JSON(label="options and fit (also in the video's comment tag)", open=True,
                                  elem_id="reenact-summary")
        go.click(on_reenact, [driver, target, *options], [out, status, files, summary], api_name="reenact",
                 preprocess=False, show_progress_on=status, concurrency_limit=1)   # one job at a time

    with gr.Tab("Reenact live"):
        live = gr.State(None, time_to_live=3600, delete_callback=close_live)
        with gr.Row():
            r_cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="camera (the driver)",
                             elem_id="reenact-live-camera")
            with gr.Column():
                r_out = gr.Image(label="the target, driven", elem_id="reenact-live-output")
                r_status = gr.Markdown(reenact_tab_status(effect.info, REENACT_LIVE_HINT),
                                       elem_id="reenact-live-status")
                recalibrate = gr.Button("Recalibrate")
        with gr.Row():
            r_target = gr.Image(label="target photo", sources=["upload"], type="filepath",
                                elem_id="reenact-live-target")
            with gr.Column():
                r_options = reenact_option_inputs(gr, effect, live=True)
                r_calibration = gr.Slider(5, 120, value=40, step=1, label="calibration latents",
                                          info="driver latents the motion is learned from")
                r_calibration_s = gr.Slider(0, 20, value=4, step=0.5, label="calibration seconds",
                                            info="...spread over at least this long")
        r_cam.stream(on_reenact_camera, [r_cam, r_target, *r_options, r_calibration, r_calibration_s, live],
                     [r_out, r_status, live], stream_every=0.1, concurrency_limit=4, api_name="reenact_webcam",
                     preprocess=False, show_progress="hidden")
        recalibrate.click(on_recalibrate, [live], [r_status], api_name="reenact_recalibrate", queue=False)


def webcam_frame(cam, payload) -> np.ndarray | None:
    """A raw webcam payload (Gradio's ImageData dict, as events with `preprocess=False` get it) → uint8 RGB."""
    if payload is None:
        return None
    from gradio.data_classes import ImageData

    return cam.preprocess(payload if isinstance(payload, ImageData) else ImageData.model_validate(payload))
