import base64
import re
from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from alan.reports.html import Report


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells, self.imgs, self._in = [], [], False

    def handle_starttag(self, tag, attrs):
        self._in = tag in ("td", "th")
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])

    def handle_data(self, data):
        if self._in:
            self.cells.append(data)

    def handle_endtag(self, tag):
        self._in = False


def test_report_embeds_tables_and_figures(tmp_path):
    fig_path = tmp_path / "fig.png"
    plt.plot([0, 1], [1, 0])
    plt.savefig(fig_path)
    plt.close()
    rep = Report("Demo <results>", intro="phantom & co")
    sec = rep.section("Segmentation")
    sec.tables.append(("DICE", ["target", "ED"], [["LV", 0.91234], ["LA <x>", None]]))
    sec.figures.append((fig_path, "histogram"))
    out = rep.write(tmp_path / "sub" / "report.html")
    text = out.read_text()
    p = _Cells()
    p.feed(text)
    assert p.cells == ["target", "ED", "LV", "0.912", "LA <x>"]
    assert len(p.imgs) == 1
    payload = re.sub("^data:image/png;base64,", "", p.imgs[0])
    assert base64.b64decode(payload) == fig_path.read_bytes()
    assert "Demo &lt;results&gt;" in text
    assert not list((tmp_path / "sub").glob(".*tmp"))


def test_report_plays_videos_linked_inside_its_folder_embedded_outside(tmp_path):
    import numpy as np

    from alan.reports.overlays import save_overlay_mp4

    frames = np.random.default_rng(0).integers(0, 255, (4, 16, 16), dtype=np.uint8)
    inside = save_overlay_mp4(tmp_path / "rep" / "rec 1" / "overlay.mp4", frames, frames > 128, fps=5)
    outside = save_overlay_mp4(tmp_path / "elsewhere.mp4", frames, frames > 128, fps=5)
    rep = Report("videos")
    rep.section("s").figures += [(inside, "in"), (outside, "out")]
    text = rep.write(tmp_path / "rep" / "report.html").read_text()
    srcs = re.findall(r"<video [^>]*src='([^']+)'", text)
    assert srcs[0] == "rec%201/overlay.mp4"
    assert base64.b64decode(srcs[1].removeprefix("data:video/mp4;base64,")) == outside.read_bytes()


def test_report_links_figures_inside_its_folder_when_asked(tmp_path):
    fig_in, fig_out = tmp_path / "rep" / "rec 1" / "area.png", tmp_path / "elsewhere.png"
    fig_in.parent.mkdir(parents=True)
    for path in (fig_in, fig_out):
        plt.plot([0, 1], [1, 0])
        plt.savefig(path)
        plt.close()
    for link in (False, True):
        rep = Report("figures", link_figures=link)
        rep.section("s").figures += [(fig_in, "in"), (fig_out, "out")]
        p = _Cells()
        p.feed(rep.write(tmp_path / "rep" / "report.html").read_text())
        if link:
            assert p.imgs[0] == "rec%201/area.png"
        else:
            assert base64.b64decode(p.imgs[0].removeprefix("data:image/png;base64,")) == fig_in.read_bytes()
        assert base64.b64decode(p.imgs[1].removeprefix("data:image/png;base64,")) == fig_out.read_bytes()
