"""`alan pick` in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

The browser test starts the real command on a small EchoNet phantom, clicks a pixel inside a
known parcel, checks the mask shown is `ParcelToSegment.predict`'s, saves, loads the model back,
and checks that requests for files outside the data root are refused. It is skipped only when
Chromium or its driver is not installed (`.ci/run` installs both).
"""

import io
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from skimage.segmentation import find_boundaries
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from alan.data import open_dataset
from alan.phantom import synthesize
from alan.downstream.parcel_to_segment import ParcelToSegment
from alan.models.backbones import bundled_backbone, load_backbone
from alan.models.raptor import RaptorHead, save_head
from alan.pipelines.parcels import compute_parcels
from alan.pipelines.pick import blank_model
from alan.pipelines.segment import to_work

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="the headless browser test needs Debian's chromium and chromium-driver "
           "(apt-get install chromium chromium-driver, or `make browser` as root)",
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("pick_browser")
    data = synthesize("echonet", root / "echonet", seed=4, size="small")
    bb = load_backbone(bundled_backbone())
    torch.manual_seed(1)
    head = RaptorHead(bb.embed_dim, 8)
    save_head(head, root / "head", backbone_hash=bb.hash)
    return root, data, bb, head


def _post(url, body, header=True, host=None):
    headers = {"Content-Type": "application/json", **({"X-Alan-Pick": "1"} if header else {}),
               **({"Host": host} if host else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        return e.code, json.loads(text) if text.startswith("{") else {"text": text}


def _start(args, cwd, timeout=90):
    proc = subprocess.Popen([sys.executable, "-m", "alan.cli.main", "pick", *args, "--port", "0"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        proc.kill()
        raise AssertionError(f"alan pick did not start: {proc.stderr.read()}") from None
    assert "open http://127.0.0.1:" in line, line + proc.stderr.read()
    return proc, line.split("open ")[1].split()[0]


def _known_parcel(parcels):
    """(class, row, col): the deepest pixel of the frame's largest parcel region."""
    best = None
    for c in np.unique(parcels):
        lab, n = ndimage.label(parcels == c)
        sizes = np.bincount(lab.ravel())[1:]
        region = lab == (np.argmax(sizes) + 1)
        depth = ndimage.distance_transform_edt(region)
        if best is None or sizes.max() > best[0]:
            r, col = np.unravel_index(np.argmax(depth), depth.shape)
            best = (sizes.max(), int(c), int(r), int(col))
    return best[1:]


def _orange(png_bytes):
    """Pixels the page paints as the predicted mask (red well above blue; the frame is gray)."""
    rgb = np.asarray(Image.open(io.BytesIO(png_bytes)).convert("RGB")).astype(int)
    return (rgb[..., 0] - rgb[..., 2] > 90) & (rgb[..., 1] < rgb[..., 0] - 40)


@needs_chromium
def test_pick_in_a_real_browser(world, tmp_path):
    root, data, bb, head = world
    out = tmp_path / "lv_picked.json"
    # --out relative to the server's folder, as a user types it
    proc, url = _start([str(data), "--head", str(root / "head"), "--out", out.name, "--by", "tester"], cwd=tmp_path)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=980,900",
                "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    outside = tmp_path / "outside.json"
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        try:
            _drive(driver, url, data, bb, head, out, outside)
        finally:
            driver.quit()
        for body in ({"path": str(outside)}, {"path": f"{data}/../{outside.name}"}, {"path": "/etc/passwd"},
                     {"path": f"{data}/../../../../etc/passwd"}):
            code, reply = _post(url + "api/load", body)
            assert code == 403 and "error" in reply, (body, code, reply)
        assert _post(url + "api/load", {"path": str(out)}, header=False)[0] == 403  # no cross-site POSTs
        assert _post(url + "api/load", {"path": str(out)}, host="evil.example")[0] == 400  # DNS rebinding
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + "..%2f..%2f..%2fetc%2fpasswd", timeout=10)
        assert e.value.code == 404
        assert sorted(p.name for p in tmp_path.iterdir()) == ["lv_picked.json", "outside.json"]  # nothing else written
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _drive(driver, url, data, bb, head, out, outside):
    """Click a known parcel, check the mask shown, save, toggle it out, load it back, try a refused load."""
    wait = WebDriverWait(driver, 30)
    driver.get(url)
    view = driver.find_element(By.ID, "view")
    wait.until(lambda d: view.get_attribute("data-shown") == "0")
    record = open_dataset(data).records[0]
    frame = record.ed
    parcels = compute_parcels(bb, head, to_work(list(np.asarray(record.frames)), 112))[frame]  # as the server does
    cls, row, col = _known_parcel(parcels)
    want = blank_model(8, "LV", {}).with_interior([cls]).predict(parcels)
    assert want.any()
    before = view.screenshot_as_png
    assert driver.find_element(By.ID, "mask-area").text == "0" and not _orange(before).any()

    w = view.size["width"]
    scale = w / 112
    ActionChains(driver).move_to_element_with_offset(
        view, int((col + 0.5) * scale - w / 2), int((row + 0.5) * scale - view.size["height"] / 2)).click().perform()
    wait.until(lambda d: f"parcel {cls} added" in d.find_element(By.ID, "status").text)
    wait.until(lambda d: view.get_attribute("data-shown") == "1")
    assert driver.find_element(By.ID, "mask-area").text == str(int(want.sum()))
    chip = driver.find_element(By.CSS_SELECTOR, f"#chips button[data-parcel='{cls}']")
    assert "on" in chip.get_attribute("class").split()
    after = view.screenshot_as_png
    assert after != before
    up = np.ones((4, 4), bool)
    expected = np.kron(want, up)
    # lines drawn over the fill: parcel boundaries, and the ground-truth contour of this annotated frame
    lines = find_boundaries(np.kron(parcels, up).astype(int) + 1, mode="inner")
    lines |= find_boundaries(np.kron(record.masks[frame]["LV"], up), mode="inner")
    shown = _orange(after)
    assert shown.shape == expected.shape
    keep = ~lines
    assert (shown & expected & keep).sum() / ((shown | expected) & keep).sum() > 0.98  # the mask painted is predict's
    # then the area curve and the DICE of the annotated frames, for this selection
    wait.until(lambda d: d.find_element(By.ID, "curve").get_attribute("data-version") == "1")
    wait.until(lambda d: d.find_element(By.ID, "dice").get_attribute("data-version") == "1")
    assert "%" in driver.find_element(By.ID, "dice").text
    heights = [float(p.split(",")[1]) for p in driver.find_element(By.CSS_SELECTOR, "#curve polyline")
               .get_attribute("points").split()]
    assert heights[frame] < 135  # the shown frame's area is above the zero line

    if os.environ.get("ALAN_PICK_SCREENSHOT"):  # how docs/img/pick.png is made
        driver.save_screenshot(os.environ["ALAN_PICK_SCREENSHOT"])

    driver.find_element(By.ID, "save-btn").click()
    wait.until(lambda d: "saved" in d.find_element(By.ID, "status").text)
    doc = json.loads(out.read_text())
    assert doc["interior_parcels"] == [cls] and doc["source"] == "picked" and doc["picked_by"] == "tester"
    assert doc["provenance"]["head_hash"] == head.hash and doc["provenance"]["backbone_hash"] == bb.hash
    assert ParcelToSegment.from_json(out).interior_parcels_ == [cls]

    chip.click()  # out again, then load the saved model back
    wait.until(lambda d: f"parcel {cls} removed" in d.find_element(By.ID, "status").text)
    wait.until(lambda d: d.find_element(By.ID, "mask-area").text == "0")
    assert driver.find_element(By.ID, "load-path").get_attribute("value") == out.name
    driver.find_element(By.ID, "load-btn").click()
    wait.until(lambda d: "loaded" in d.find_element(By.ID, "status").text)
    wait.until(lambda d: d.find_element(By.ID, "interior").text == str(cls))
    wait.until(lambda d: d.find_element(By.ID, "mask-area").text == str(int(want.sum())))

    # a valid model file outside the data root is refused, from the page and by a crafted request
    shutil.copy(out, outside)
    box = driver.find_element(By.ID, "load-path")
    box.clear()
    box.send_keys(str(outside))
    driver.find_element(By.ID, "load-btn").click()
    wait.until(lambda d: "outside the data root" in d.find_element(By.ID, "status").text)
    assert driver.find_element(By.ID, "status").get_attribute("class") == "error"


def test_pick_refuses_a_model_of_another_head_and_a_non_model_out(world, tmp_path, run_cli):
    root, data, bb, _ = world
    other = RaptorHead(bb.embed_dim, 8)
    save_head(other, tmp_path / "other", backbone_hash=bb.hash)
    model = blank_model(8, "LV", {"backbone_hash": bb.hash, "head_hash": other.hash, "work_size": 112})
    model.to_json(tmp_path / "other.json")
    res = run_cli("pick", str(data), "--head", str(root / "head"), "--model", str(tmp_path / "other.json"),
                  "--port", "0")
    assert res.returncode == 2 and "head_hash" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    res = run_cli("pick", str(data), "--head", str(root / "head"), "--out", str(notes), "--port", "0")
    assert res.returncode == 2 and "not a parcel-to-segment model" in res.stderr and notes.read_text() == "mine"


def test_segment_eval_and_analyze_take_a_picked_model_unchanged(world, tmp_path, run_cli):
    from alan.pipelines.pick import PickSession, open_parcellator

    root, data, _, _ = world
    session = PickSession(open_dataset(data).records[:1], open_parcellator(bundled_backbone(), root / "head"))
    for c in (2, 5):
        session.toggle(c)
    session.save(tmp_path / "lv.json", by="tester")
    common = ["--backbone", str(bundled_backbone()), "--head", str(root / "head")]
    res = run_cli("segment", "eval", "--model", str(tmp_path / "lv.json"), *common, "--data", str(data),
                  "--split", "all", "--json")
    assert res.returncode == 0, res.stderr
    assert set(json.loads(res.stdout[res.stdout.index("{"):])["dice"]["LV"]) == {"ED", "ES"}
    video = sorted((data / "Videos").glob("*.avi"))[0]
    res = run_cli("analyze", str(video), *common, "--segment", str(tmp_path / "lv.json"), "--out", str(tmp_path / "an"))
    assert res.returncode == 0, res.stderr
    (found,) = (tmp_path / "an").rglob("summary.json")
    summary = json.loads(found.read_text())
    assert summary["provenance"]["segment"] == {"LV": [2, 5]}
