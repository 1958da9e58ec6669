import numpy as np
import pytest

from stream.face.align import align_face
from stream.face.paste import face_mask, paste_back, paste_faces


@pytest.fixture(scope="module")
def astro(frame_640, face_landmarks):
    return frame_640, face_landmarks["astronaut"][0] + np.array([64, 0], np.float32)


def _frame_mask(aligned, shape):
    """The mask paste_back uses, warped into the frame (float32 [H, W])."""
    import cv2

    mask = face_mask(aligned, 256)
    return cv2.warpAffine(mask, aligned.matrix_at(256), (shape[1], shape[0]),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


@pytest.mark.parametrize("size", [1024, 256])
def test_round_trip_reproduces_frame(astro, size):
    frame, lm = astro
    aligned = align_face(frame, lm, size)
    out = paste_back(frame, aligned.crop, aligned)
    inside = _frame_mask(aligned, frame.shape) > 0
    assert inside.sum() > 5000
    assert _psnr(out[inside], frame[inside]) > 35
    assert np.array_equal(out[~inside], frame[~inside])


def test_replace_puts_the_edit_inside_the_mask_only(astro):
    frame, lm = astro
    aligned = align_face(frame, lm, 256)
    red = np.zeros_like(aligned.crop)
    red[..., 2] = 255
    out = paste_back(frame, red, aligned)
    alpha = _frame_mask(aligned, frame.shape)
    core = alpha > 0.99
    assert core.sum() > 3000
    assert np.all(out[core][:, 2] >= 250) and np.all(out[core][:, :2] <= 5)
    assert np.array_equal(out[alpha == 0], frame[alpha == 0])
    assert not np.shares_memory(out, frame)
    # The eyes (from the landmarks) are inside the fully replaced core.
    eye = np.round(lm[468]).astype(int)
    assert core[eye[1], eye[0]]


def test_edited_crop_of_another_resolution(astro):
    """A 1024 "generator" output pasted for a 256 alignment = the 256 paste of the same picture."""
    import cv2

    frame, lm = astro
    a256 = align_face(frame, lm, 256)
    a1024 = align_face(frame, lm, 1024)
    edit = cv2.GaussianBlur(a1024.crop, (0, 0), 6)  # a smooth "edit" at 1024
    via_1024 = paste_back(frame, edit, a256)
    via_256 = paste_back(frame, cv2.resize(edit, (256, 256), interpolation=cv2.INTER_AREA), a256)
    inside = _frame_mask(a256, frame.shape) > 0
    assert _psnr(via_1024[inside], via_256[inside]) > 38


def test_residual_mode(astro):
    frame, lm = astro
    aligned = align_face(frame, lm, 256)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 200, aligned.crop.shape, dtype=np.uint8)  # stands for G(w)
    same = paste_back(frame, base, aligned, mode="residual", base_crop=base)
    assert np.array_equal(same, frame), "zero residual must leave the frame bit-identical"
    brighter = np.clip(base.astype(np.int16) + 30, 0, 255).astype(np.uint8)  # G(w+αΔ) = G(w) + 30
    out = paste_back(frame, brighter, aligned, mode="residual", base_crop=base)
    alpha = _frame_mask(aligned, frame.shape)
    core = (alpha > 0.99) & np.all(frame < 200, axis=-1)
    change = out[core].astype(np.int16) - frame[core]
    assert np.abs(change - 30).max() <= 1
    assert np.array_equal(out[alpha == 0], frame[alpha == 0])


def test_mask_properties(astro):
    frame, lm = astro
    aligned = align_face(frame, lm, 256)
    mask = face_mask(aligned)
    assert mask.shape == (256, 256) and mask.dtype == np.float32
    assert mask.min() == 0.0 and mask.max() == 1.0
    assert mask[0].max() == 0 and mask[:, -1].max() == 0
    big = face_mask(aligned, size=1024)
    assert big.shape == (1024, 1024)
    assert abs(big.mean() - mask.mean()) < 0.01
    soft = face_mask(aligned, feather_px=30)
    assert ((soft > 0) & (soft < 1)).sum() > ((mask > 0) & (mask < 1)).sum()


def test_paste_faces_batch_and_errors(astro):
    frame, lm = astro
    aligned = align_face(frame, lm, 256)
    out = paste_faces(frame, [aligned.crop], [aligned])
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.array_equal(paste_faces(frame, [], []), frame)
    with pytest.raises(ValueError, match="crops for"):
        paste_faces(frame, [aligned.crop], [])
    with pytest.raises(ValueError, match="base_crop"):
        paste_back(frame, aligned.crop, aligned, mode="residual")
    with pytest.raises(ValueError, match="unknown"):
        paste_back(frame, aligned.crop, aligned, mode="add")
    with pytest.raises(ValueError, match="uint8"):
        paste_back(frame, aligned.crop.astype(np.float32), aligned)
