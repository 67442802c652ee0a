"""report.html in a real browser (headless Chromium over the DevTools protocol), and `segpipe report`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from segpipe.config import EvaluateConfig
from segpipe.errors import SegpipeError
from tests._browser import Browser, coloured_pixels, find_chromium
from tests.conftest import shared_data

PATIENTS = ("BRATS_001", "BRATS_003", "BRATS_005")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    """Reports of three real BrainTumour_2D patients against predictions that erode, shift or drop the reference."""
    from PIL import Image

    from segpipe.pipeline.evaluate import evaluate

    data = shared_data("BrainTumour_2D")
    root = tmp_path_factory.mktemp("report")
    for sub in ("ref", "pred"):
        (root / sub).mkdir()
    for i, patient in enumerate(PATIENTS):
        for path in sorted((data / "training_labels").glob(f"{patient}_z*.png")):
            ref = np.asarray(Image.open(path))
            pred = [ndimage.grey_erosion(ref, size=(3, 3)), np.roll(ref, 4, axis=1), np.where(ref == 3, 0, ref)][i]
            Image.fromarray(ref).save(root / "ref" / path.name)
            Image.fromarray(pred.astype(np.uint8)).save(root / "pred" / path.name)
    ecfg = EvaluateConfig(patient_pattern=r"(?P<patient>BRATS_\d+)")
    evaluate(root / "pred", root / "ref", root / "reports", ecfg, {0: "background", 1: "edema", 2: "non-enhancing", 3: "enhancing"},
             images=data / "training_images")
    return root / "reports"


def test_report_is_one_folder_without_network_references(report_dir):
    page = (report_dir / "report.html").read_text()
    assert "http://" not in page and "https://" not in page  # no CDN, no fonts, nothing fetched
    scripts = sorted((report_dir / "report_files").glob("patient_*.js"))
    assert len(scripts) == len(PATIENTS)
    assert all("data:image/png;base64," in s.read_text() and "http" not in s.read_text() for s in scripts)
    total = sum(p.stat().st_size for p in report_dir.rglob("*") if p.is_file())
    assert total < 2_000_000  # 18 slices of 120x120 with overlays and figures


def test_report_in_headless_chromium(report_dir, tmp_path):
    binary = find_chromium()
    if binary is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium; scripts/test.sh installs it "
                    "where apt-get can)")
    pytest.importorskip("websocket", reason="websocket-client drives Chromium (pip install 'segpipe[test]')")
    per_patient = json.loads((report_dir / "summary.json").read_text())
    assert per_patient["patients"] == len(PATIENTS)
    import pandas as pd

    table = pd.read_csv(report_dir / "per_patient.csv")
    worst_first = list(table.sort_values("dice_mean")["patient"])
    browser = Browser(binary)
    try:
        url = (report_dir / "report.html").resolve().as_uri()
        browser.navigate(url)
        # no fragment: the worst patient opens, and the table lists worst first
        browser.wait_for(f"document.body.getAttribute('data-shown') === '{worst_first[0]}|0'")
        rows = browser.js("[...document.querySelectorAll('#patients tbody tr')].map(r => r.cells[0].textContent)")
        assert rows == worst_first
        # a fragment names the patient and slice; the page honours it
        patient = "BRATS_003"
        browser.navigate(f"{url}#patient={patient}&slice=0")
        browser.wait_for(f"document.body.getAttribute('data-shown') === '{patient}|0'")
        shots = [browser.screenshot(tmp_path / "slice0.png", ".panels")]
        states = [browser.js("segpipeViewer.state()")]
        for k in range(1, 4):  # step through slices with the arrow key
            browser.key("ArrowRight")
            browser.wait_for(f"document.body.getAttribute('data-shown') === '{patient}|{k}'")
            shots.append(browser.screenshot(tmp_path / f"slice{k}.png", ".panels"))
            states.append(browser.js("segpipeViewer.state()"))
        assert [s["slice"] for s in states] == [0, 1, 2, 3] and states[0]["slices"] == 6
        assert browser.js("location.hash") == f"#patient={patient}&slice=3"
        counts = [s["counts"]["ref"] + s["counts"]["pred"] for s in states]
        for shot, count in zip(shots, counts):  # non-blank: a brain in grey, and an overlay in colour where there is tumour
            assert shot.std() > 20
            assert (coloured_pixels(shot) > 50) == (count > 0)
        assert counts[0] == 0 and all(counts[1:]) and len(set(counts)) == len(counts)  # z46 holds no tumour
        assert all(not np.array_equal(a, b) for a, b in zip(shots, shots[1:]))
        browser.key("ArrowLeft")
        browser.wait_for(f"document.body.getAttribute('data-shown') === '{patient}|2'")
        assert np.array_equal(browser.screenshot(selector=".panels"), shots[2])  # the same slice draws the same pixels
        # label toggles: switching every label off leaves the grey image
        before = coloured_pixels(shots[2])
        for value in (1, 2, 3):
            browser.click(f"#toggles input[data-label='{value}']")
        browser.wait_for("segpipeViewer.state().counts.ref === 0 && segpipeViewer.state().counts.pred === 0")
        bare = browser.screenshot(tmp_path / "labels_off.png", ".panels")
        assert coloured_pixels(bare) < before / 10 and bare.std() > 20
        browser.click("#toggles input[data-label='1']")
        browser.wait_for("segpipeViewer.state().counts.ref > 0")
        # sorting and filtering the table; the down arrow moves to the next patient in its order
        browser.click("#patients th[data-col='patient']")
        assert browser.js("document.querySelector('#patients tbody tr').cells[0].textContent") == "BRATS_001"
        browser.click("#filter")
        browser.call("Input.insertText", text="dice_mean<0")
        assert browser.js("document.querySelectorAll('#patients tbody tr').length") == 0
        browser.js("(() => { const f = document.querySelector('#filter'); f.value = ''; f.dispatchEvent(new Event('input')); })()")
        browser.js("document.activeElement.blur()")
        browser.key("ArrowDown")
        browser.wait_for("document.body.getAttribute('data-shown') === 'BRATS_005|0'")
        page = browser.screenshot(tmp_path / "page.png")
        assert page.std() > 20
        assert all(u.startswith(("file://", "data:")) for u in browser.requested_urls())
    finally:
        browser.close()


def test_slices_of_a_real_volume_cover_the_tumour_with_context():
    import nibabel as nib

    from segpipe.reports.html.views import pick_slices, volume_view

    case = shared_data("BraTS2021") / "BraTS2021_00006"
    seg = np.asarray(nib.load(str(case / "BraTS2021_00006_seg.nii.gz")).dataobj).astype(np.uint8)
    picks = pick_slices(seg, np.zeros_like(seg), 16)
    tumour = np.nonzero(seg.any(axis=(0, 1)))[0]
    assert len(picks) <= 16 and picks == sorted(picks)
    assert picks[0] < tumour[0] and picks[-1] > tumour[-1]  # context on both sides
    assert sum(tumour[0] <= z <= tumour[-1] for z in picks) == 12
    view = volume_view("P", "BraTS2021_00006", case / "BraTS2021_00006_t1ce.nii.gz", seg, seg, 16)
    assert len(view.slices) == len(picks) and view.slices[0].image.startswith("data:image/png;base64,")


def test_segpipe_report_reopens_and_rebuilds(report_dir, tmp_path):
    from click.testing import CliRunner

    from segpipe.cli import cli

    reports = tmp_path / "model" / "evaluation"
    shutil.copytree(report_dir, reports)
    runner = CliRunner()
    out = runner.invoke(cli, ["report", str(tmp_path / "model"), "--json"])  # a folder above the reports
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == {"report": str((reports / "report.html").resolve()), "rebuilt": False}
    (reports / "report.html").unlink()
    shutil.rmtree(reports / "report_files")
    out = runner.invoke(cli, ["report", str(reports)])
    assert out.exit_code == 0, out.output
    assert out.output.strip() == f"rebuilt: {(reports / 'report.html').resolve()}"
    assert len(list((reports / "report_files").glob("patient_*.js"))) == len(PATIENTS)
    assert "window.SEGPIPE" in (reports / "report.html").read_text()
    out = runner.invoke(cli, ["report", str(tmp_path / "nothing")])
    assert out.exit_code == 1 and out.output.startswith("error: ") and "no such model or reports folder" in out.output
    (tmp_path / "empty").mkdir()
    out = runner.invoke(cli, ["report", str(tmp_path / "empty")])
    assert out.exit_code == 1 and "holds no report" in out.output


def test_rebuild_names_a_vanished_input(report_dir, tmp_path):
    from segpipe.reports.reopen import recorded_inputs

    reports = tmp_path / "r"
    shutil.copytree(report_dir, reports)
    summary = json.loads((reports / "summary.json").read_text())
    summary["inputs"]["pred"] = str(tmp_path / "gone")
    (reports / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(SegpipeError, match="pred folder .*gone no longer exists"):
        recorded_inputs(reports)


@pytest.mark.parametrize("text, words", [
    ("[1, 2]", "records no inputs"),
    ('"str"', "records no inputs"),
    ("null", "records no inputs"),
    ('{"patients": ', "not valid JSON"),
    ('{"inputs": "x"}', "'inputs' holds str, expected an object"),
    ('{"inputs": []}', "'inputs' holds list, expected an object"),
    ('{"inputs": {"pred": 5, "labels": null}}', "'inputs.pred' holds int, expected a path"),
    ('{"inputs": {"pred": "."}}', "'inputs.labels' is missing"),
    ('{"inputs": {"pred": ".", "labels": ".", "evaluate_config": [1]}}', "'inputs.evaluate_config' holds list"),
], ids=["list", "string", "null", "truncated", "inputs-string", "inputs-list", "pred-int", "no-labels", "config-list"])
def test_rebuild_names_a_malformed_summary(report_dir, tmp_path, text, words):
    """A hand-edited summary.json: one line naming it, not a TypeError as an internal error."""
    from click.testing import CliRunner

    from segpipe.cli import cli

    reports = tmp_path / "r"
    shutil.copytree(report_dir, reports)
    (reports / "summary.json").write_text(text)
    out = CliRunner().invoke(cli, ["report", str(reports), "--rebuild", "-q"])
    assert out.exit_code == 1 and out.output.startswith(f"error: {reports / 'summary.json'}: ") and words in out.output, out.output
    assert "internal error" not in out.output
