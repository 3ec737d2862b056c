"""Parcel boundary overlays as in the ALAN paper's Figure 2: blue lines between parcels, the
annotated segment in green, on the gray frame. PNG (a row of frames) and MP4 (every frame).

MP4s are H.264 (yuv420p, +faststart), the codec every browser plays in a ``<video>`` tag, encoded
by the ffmpeg that the imageio-ffmpeg wheel ships (OpenCV's own wheels have no H.264 encoder).

Small frames (EchoNet's 112 px) are enlarged by an integer factor first (nearest neighbour for
the parcels, bilinear for the image) so that one-pixel boundaries stay readable.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from alan.artifacts import atomic_file
from alan.data.clips import frames_to_unit
from alan.errors import AlanError

BLUE = (0, 90, 255)
GREEN = (0, 230, 0)


def _scale_for(shape: tuple[int, int], min_side: int) -> int:
    return max(1, int(np.ceil(min_side / max(1, min(shape)))))


def overlay_scale(shape: tuple[int, int], min_side: int = 256) -> int:
    """The integer enlargement `save_overlay_mp4` applies to frames of `shape` (H, W)."""
    return _scale_for(tuple(shape), min_side)


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another label: skimage's ``find_boundaries(labels, mode="thick")``
    (no label is background), by shifted comparisons instead of a dilation and an erosion."""
    lab = np.asarray(labels)
    out = np.zeros(lab.shape, bool)
    d = lab[:, 1:] != lab[:, :-1]
    out[:, 1:] |= d
    out[:, :-1] |= d
    d = lab[1:] != lab[:-1]
    out[1:] |= d
    out[:-1] |= d
    return out


def overlay_frames(frames: np.ndarray, parcels: np.ndarray, masks: Mapping[str, np.ndarray] | None = None,
                   scale: int = 1, color: tuple[int, int, int] = BLUE) -> Iterator[np.ndarray]:
    """`boundary_overlay` of every frame of a recording, the same pixels at a third of the cost
    (one-byte colour planes instead of RGB fancy indexing): frames (T, H, W), parcels (T, H, W),
    masks {label: bool (T, H, W)}; yields RGB uint8 (H*scale, W*scale, 3)."""
    frames, parcels = np.asarray(frames), np.asarray(parcels)
    if frames.shape != parcels.shape:
        raise AlanError(f"frames {frames.shape} and parcel maps {parcels.shape} differ in size")
    masks = {} if masks is None else masks
    for i, frame in enumerate(frames):
        gray = frame if frame.dtype == np.uint8 else (frames_to_unit(frame) * 255).round().astype(np.uint8)
        lab = parcels[i]
        if scale > 1:
            gray = cv2.resize(gray, (gray.shape[1] * scale, gray.shape[0] * scale), interpolation=cv2.INTER_LINEAR)
            lab = lab.repeat(scale, axis=0).repeat(scale, axis=1)
        paint = [(boundaries(lab), color)]
        for m in masks.values():
            m = np.asarray(m[i], dtype=bool)
            m = m.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else m
            paint.append((boundaries(m) & m, GREEN))
        planes = []
        for c in range(3):
            plane = gray.copy()
            for where, rgb in paint:
                plane[where] = rgb[c]
            planes.append(plane)
        yield cv2.merge(planes)


def boundary_overlay(frame: np.ndarray, parcels: np.ndarray, mask: np.ndarray | dict | None = None,
                     scale: int = 1, color: tuple[int, int, int] = BLUE) -> np.ndarray:
    """RGB uint8 (H*scale, W*scale, 3): gray frame, parcel boundaries in `color`, mask contour(s) in green."""
    gray = (frames_to_unit(np.asarray(frame)) * 255).round().astype(np.uint8)
    lab = np.asarray(parcels)
    if gray.shape != lab.shape:
        raise AlanError(f"frame {gray.shape} and parcel map {lab.shape} differ in size")
    if scale > 1:
        gray = cv2.resize(gray, (gray.shape[1] * scale, gray.shape[0] * scale), interpolation=cv2.INTER_LINEAR)
        lab = np.kron(lab, np.ones((scale, scale), dtype=lab.dtype))
    rgb = np.repeat(gray[..., None], 3, axis=2)
    rgb[boundaries(lab)] = color
    masks = mask.values() if isinstance(mask, dict) else ([] if mask is None else [mask])
    for m in masks:
        m = np.asarray(m, dtype=bool)
        if scale > 1:
            m = np.kron(m, np.ones((scale, scale), dtype=bool))
        rgb[boundaries(m) & m] = GREEN  # the contour just inside the mask
    return rgb


def _atomic(path: Path, write) -> Path:
    with atomic_file(path) as tmp:
        write(str(tmp))
    return path


def overlay_grid(frames: np.ndarray, parcels: np.ndarray, masks: Sequence | None = None, min_side: int = 256,
                 gap: int = 4) -> np.ndarray:
    """Overlays of frames (N, H, W) side by side, RGB uint8."""
    scale = _scale_for(frames.shape[-2:], min_side)
    tiles = [boundary_overlay(f, p, None if masks is None else masks[i], scale) for i, (f, p) in enumerate(zip(frames, parcels))]
    h = max(t.shape[0] for t in tiles)
    canvas = np.full((h, sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1), 3), 255, np.uint8)
    x = 0
    for t in tiles:
        canvas[: t.shape[0], x: x + t.shape[1]] = t
        x += t.shape[1] + gap
    return canvas


def save_overlay_png(path: str | Path, frames: np.ndarray, parcels: np.ndarray, masks: Sequence | None = None,
                     titles: Sequence[str] | None = None, min_side: int = 256) -> Path:
    """A row of boundary overlays (frames (N, H, W), parcels (N, H, W)) as one PNG, written atomically."""
    frames, parcels = np.asarray(frames), np.asarray(parcels)
    if frames.ndim == 2:
        frames, parcels = frames[None], parcels[None]
    canvas = overlay_grid(frames, parcels, masks, min_side)
    if titles:
        band = np.full((22, canvas.shape[1], 3), 255, np.uint8)
        step = canvas.shape[1] / len(titles)
        for i, t in enumerate(titles):
            cv2.putText(band, str(t), (int(i * step) + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        canvas = np.concatenate([band, canvas])

    def write(tmp: str) -> None:
        if not cv2.imwrite(tmp, cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
            raise AlanError(f"{path}: could not write PNG")

    return _atomic(Path(path), write)


def _even(rgb: np.ndarray) -> np.ndarray:
    """Pad an RGB frame by edge replication to even height and width (yuv420p needs them)."""
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(rgb)


def write_h264(path: str | Path, frames: Iterable[np.ndarray], fps: float = 25.0, preset: str = "veryfast",
               crf: int = 20, threads: int | None = None) -> Path:
    """RGB uint8 frames (H, W, 3), streamed, as a browser-playable H.264 MP4, written atomically;
    `preset` and `crf` are x264's speed / size and quality settings, `threads` its thread count
    (None: x264's own choice)."""
    import imageio_ffmpeg

    def write(tmp: str) -> None:
        writer = None
        try:
            for rgb in frames:
                rgb = _even(np.asarray(rgb, dtype=np.uint8))
                if writer is None:
                    writer = imageio_ffmpeg.write_frames(
                        tmp, (rgb.shape[1], rgb.shape[0]), fps=float(fps), codec="libx264", pix_fmt_in="rgb24",
                        pix_fmt_out="yuv420p", quality=None, bitrate=None, macro_block_size=1,
                        output_params=["-crf", str(int(crf)), "-preset", preset, "-movflags", "+faststart",
                                       *(["-threads", str(int(threads))] if threads else [])],
                        ffmpeg_log_level="error")
                    writer.send(None)
                writer.send(rgb.tobytes())
            if writer is None:
                raise AlanError(f"{path}: no frames to write")
        except OSError as e:
            raise AlanError(f"{path}: ffmpeg could not write H.264 ({e})") from None
        finally:
            if writer is not None:
                writer.close()

    return _atomic(Path(path), write)


def save_overlay_mp4(path: str | Path, frames: np.ndarray, parcels: np.ndarray, fps: float = 25.0,
                     min_side: int = 256, masks: Sequence | Mapping[str, np.ndarray] | None = None) -> Path:
    """Every frame's boundary overlay as an H.264 MP4 (plays in browsers), written atomically;
    `masks[i]` (a bool array, a {label: bool array} dict, or None) is drawn in green on frame i, or
    `masks` is {label: bool (T, H, W)}: every label's mask of each frame."""
    frames, parcels = np.asarray(frames), np.asarray(parcels)
    scale = _scale_for(frames.shape[-2:], min_side)
    if masks is None or isinstance(masks, Mapping):
        return write_h264(path, overlay_frames(frames, parcels, masks, scale), fps)
    overlays = (boundary_overlay(f, p, None if masks is None else masks[i], scale=scale)
                for i, (f, p) in enumerate(zip(frames, parcels)))
    return write_h264(path, overlays, fps)
