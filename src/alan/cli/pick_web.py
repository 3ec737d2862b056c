"""The web layer of `alan pick`: a small FastAPI app over `alan.pipelines.pick.PickSession`.

One HTML page (assets/pick/index.html) and a JSON API. Records are addressed by their index
in the listing, never by a path; the only request that names a file is "load a model", and it
goes through `PathPolicy` (data root and the model paths given on the command line). Nothing is
written except the `--out` model. POST requests must carry the ``X-Alan-Pick`` header, which a
page of another origin cannot send without a CORS preflight this server never grants.
"""

from __future__ import annotations

import ipaddress
import weakref
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.middleware.trustedhost import TrustedHostMiddleware

from alan.errors import AlanError
from alan.pipelines.pick import PathPolicy, PathRefused, PickSession
from alan.transforms.spatial import masks_to_native, masks_to_work
from alan.reports.overlays import boundary_overlay

HEADER = "x-alan-pick"
SELECTED = np.array([255, 230, 0], np.float32)   # raw union of the chosen classes (tint)
MASK = np.array([255, 110, 0], np.float32)       # post-processed mask (fill + outline)
TRUTH = (0, 230, 0)                              # ground truth contour on annotated frames


class Click(BaseModel):
    record: int
    frame: int
    row: int
    col: int


class Parcel(BaseModel):
    parcel: int


class Split(BaseModel):
    split: str


class LoadRequest(BaseModel):
    path: str


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def render_view(session: PickSession, index: int, frame: int, min_side: int = 448) -> np.ndarray:
    """RGB (H*scale, W*scale, 3): frame, parcel boundaries, chosen classes tinted, the predicted mask
    filled and outlined, and the ground truth contour where the frame is annotated."""
    from skimage.segmentation import find_boundaries

    opened = session.open(index)
    parcels = opened.parcels[frame]
    scale = max(1, int(np.ceil(min_side / max(1, min(parcels.shape)))))
    out = _base_view(session, index, frame, scale).copy()
    up = np.ones((scale, scale), dtype=bool)
    chosen = np.kron(session.model.interior_[parcels], up)
    mask = np.kron(session.mask(index, frame), up)
    out[chosen] = (0.7 * out[chosen] + 0.3 * SELECTED).round().astype(np.uint8)
    out[mask] = (0.6 * out[mask] + 0.4 * MASK).round().astype(np.uint8)
    out[find_boundaries(mask, mode="inner")] = MASK.astype(np.uint8)
    if frame in opened.truth:
        truth = masks_to_work([opened.truth[frame][1]], parcels.shape[0])[0]
        out[find_boundaries(np.kron(truth, up), mode="inner")] = TRUTH
    return out


_BASES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # OpenRecord -> {(frame, scale): RGB}


def _base_view(session: PickSession, index: int, frame: int, scale: int, keep: int = 32) -> np.ndarray:
    """The frame with its parcel boundaries (what does not change with the selection), cached."""
    opened = session.open(index)
    views = _BASES.setdefault(opened, OrderedDict())
    key = (frame, scale)
    if key not in views:
        views[key] = boundary_overlay(opened.frames[frame], opened.parcels[frame], None, scale)
        while len(views) > keep:
            views.popitem(last=False)
    views.move_to_end(key)
    return views[key]


def png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise AlanError("could not encode the view as PNG")
    return buf.tobytes()


def create_app(session: PickSession, *, policy: PathPolicy, out: Path | None, by: str | None = None,
               model_paths: tuple[Path, ...] = (), splits: dict[str, list[int]] | None = None,
               hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> FastAPI:
    """The picker's app. `splits` maps split names to record indices (for "start from the fitted rule")."""
    app = FastAPI(title="alan pick", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))
    page = resources.files("alan").joinpath("assets/pick/index.html").read_text()
    splits = splits or {}

    @app.middleware("http")
    async def same_origin_posts(request: Request, call_next: Any) -> Response:
        if request.method not in ("GET", "HEAD") and request.headers.get(HEADER) != "1":
            return JSONResponse({"error": f"refused: a {request.method} needs the {HEADER} header"}, status_code=403)
        response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.exception_handler(PathRefused)
    async def refused(_: Request, e: PathRefused) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=403)

    @app.exception_handler(AlanError)
    async def failed(_: Request, e: AlanError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=400)

    def native_area(index: int, frame: int) -> int:
        shape = session.open(index).shape
        return int(masks_to_native(session.mask(index, frame)[None], [shape])[0].sum())

    def state() -> dict[str, Any]:
        m = session.model
        return {"target": session.target, "n_parcels": session.n_parcels, "interior": session.interior,
                "version": session.version, "fitted_on": int(m.stats_["n_images"]),
                "hand_edited": m.hand_edited_, "out": None if out is None else str(out)}

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/state")
    def get_state() -> dict[str, Any]:
        recs = [{"id": r.id, "split": r.split, "n_frames": r.n_frames, "ed": r.ed, "es": r.es,
                 "annotated": any(i is not None and i in r.annotated for i in (r.ed, r.es))}
                for r in session.records]
        return {**state(), "records": recs, "splits": sorted(splits), "has_truth": session.has_truth(),
                "model_paths": [str(p) for p in model_paths], "by": by}

    @app.post("/api/open/{index}")
    def open_record(index: int) -> dict[str, Any]:
        opened = session.open(index)
        r = opened.record
        return {"index": index, "id": r.id, "n_frames": len(opened.parcels), "size": int(opened.parcels.shape[1]),
                "ed": r.ed, "es": r.es, "truth_frames": sorted(opened.truth), "shape": list(opened.shape)}

    @app.get("/api/view/{index}/{frame}.png")
    def view(index: int, frame: int) -> Response:
        with session.lock:
            return Response(png(render_view(session, index, frame)), media_type="image/png")

    @app.get("/api/frame/{index}/{frame}")
    def frame_info(index: int, frame: int) -> dict[str, Any]:
        return {**state(), "mask_area": native_area(index, frame)}

    @app.post("/api/click")
    def click(c: Click) -> dict[str, Any]:
        parcel, selected = session.toggle_at(c.record, c.frame, c.row, c.col)
        return {**state(), "parcel": parcel, "selected": selected,
                "mask_area": native_area(c.record, c.frame)}

    @app.post("/api/toggle")
    def toggle(p: Parcel) -> dict[str, Any]:
        selected = session.toggle(p.parcel)
        return {**state(), "parcel": p.parcel, "selected": selected}

    @app.get("/api/curve/{index}")
    def curve(index: int) -> dict[str, Any]:
        r = session.records[index] if 0 <= index < len(session.records) else None
        area = session.area_curve(index)
        return {"version": session.version, "area": area.tolist(), "ed": r.ed, "es": r.es}

    @app.get("/api/dice")
    def dice() -> dict[str, Any]:
        rows = session.dice()
        means = {p: float(np.mean([r["dice"] for r in rows if r["phase"] == p]))
                 for p in ("ED", "ES") if any(r["phase"] == p for r in rows)}
        return {"version": session.version, "rows": rows, "mean": means}

    @app.post("/api/fit")
    def fit(s: Split) -> dict[str, Any]:
        if s.split not in splits:
            known = ", ".join(sorted(splits)) or "none: no record has annotated frames of the target"
            raise AlanError(f"no annotated records in split {s.split!r} (splits with annotated records: {known})")
        session.fit([session.records[i] for i in splits[s.split]])
        return state()

    @app.post("/api/load")
    def load(req: LoadRequest) -> dict[str, Any]:
        session.load(policy.resolve(req.path))
        return state()

    @app.post("/api/save")
    def save() -> dict[str, Any]:
        if out is None:
            raise AlanError("no --out was given on the command line; nothing can be saved")
        session.save(out, by=by)
        return {**state(), "saved": str(out)}

    @app.post("/api/clear")
    def clear() -> dict[str, Any]:
        session.clear()
        return state()

    return app


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 7860, announce: Any = print) -> None:
    """Serve `app` until interrupted; port 0 picks a free port. `announce` gets the URL once listening."""
    import socket

    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise AlanError(f"cannot listen on {host}:{port} ({e.strerror})") from None
    sock.listen(128)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    announce(f"http://{shown}:{bound}/")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
