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
