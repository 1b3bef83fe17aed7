"""The web demo: its fusion is the command line's (byte for byte), its errors are messages; and
the page itself, driven in headless Chromium (marked ``browser``)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import run_infer
from tests.conftest import ROOT
from utils import demo as D

IR, VIS = ROOT / "data_test/Tno/IR1.png", ROOT / "data_test/Tno/VIS1.png"


def cli_png(tmp_path: Path, *flags: str) -> bytes:
    assert run_infer.main(["--ir", str(IR), "--vis", str(VIS), "--output_path", str(tmp_path / "cli"), *flags]) == 0
    return next((tmp_path / "cli").rglob("*.png")).read_bytes()


def test_the_demo_fuses_what_the_command_line_fuses(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    r = D.fuse_request([IR, VIS], root, strategy="l1_norm", output_mode="clip")
    assert r.fused.read_bytes() == cli_png(tmp_path, "--strategy", "l1_norm", "--output_mode", "clip")
    assert root in r.fused.parents and r.settings["strategy"] == "l1_norm" and r.record.is_file()
    names = [m[0] for m in r.metrics]
    from utils.metrics import PROFILES
    assert names == list(PROFILES["standard"]) and {m[0]: m[2] for m in r.metrics}["MSE"] == "↓"
    again = D.fuse_request([IR, VIS], root, strategy="l1_norm", output_mode="clip", metrics=["EN", "SSIM"])
    assert again.fused != r.fused and [m[0] for m in again.metrics] == ["EN", "SSIM"]


def test_the_demo_reports_bad_inputs_as_messages(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    bad = tmp_path / "upload.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    huge = tmp_path / "huge.png"  # a valid header claiming 20000 x 20000 pixels, no pixel data
    Image.new("L", (1, 1)).save(huge)
    data = bytearray(huge.read_bytes())
    data[16:24] = (20000).to_bytes(4, "big") * 2
    huge.write_bytes(bytes(data))
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((50, 60), np.uint8)).save(small)
    cases = [([bad, VIS], "upload.png"), ([huge, VIS], "huge.png"), ([small, VIS], "sizes differ"),
             ([IR], "two or more")]
    for sources, words in cases:
        with pytest.raises(D.DemoError, match=words) as e:
            D.fuse_request(sources, root)
        assert "Traceback" not in str(e.value)
    assert not list(root.rglob("*.png"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHROMIUM = "/usr/bin/chromium"
#: As this machine's notes advise: no background connections a closed network would refuse.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def demo_server(tmp_path):
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the demo's temporary root lands here: checked after
    proc = subprocess.Popen([sys.executable, "-m", "run_scripts.demo", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(30)
    assert not list(tmp_path.glob("densefuse-demo-*")), "the demo left its temporary folder"


def checkout_state() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=ROOT, capture_output=True,
                          text=True).stdout


@pytest.mark.browser
def test_the_page_in_a_real_browser(demo_server, tmp_path):
    """Upload a TNO pair, choose l1_norm and clip, fuse, download: the bytes are run_infer.py's.
    A corrupt upload shows the input check's message on the page. Nothing lands in the checkout."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    before = checkout_state()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600}, accept_downloads=True)
        page.goto(demo_server)
        page.locator("#uploads input[type=file]").set_input_files([str(IR), str(VIS)])
        page.locator("#strategy input").click()
        page.get_by_role("option", name="l1_norm").click()
        page.locator("#mode").get_by_label("clip").check()
        page.locator("#fuse").click()
        page.wait_for_selector("#downloads a", timeout=90_000)
        with page.expect_download() as download:
            page.locator('#downloads a[href$="/1.png"]').first.click()
        got = Path(download.value.path()).read_bytes()
        if shot := os.environ.get("DENSEFUSE_SCREENSHOT"):  # how docs/demo.png was made
            page.screenshot(path=shot, full_page=True)
        page.reload()
        bad = tmp_path / "broken.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        page.locator("#uploads input[type=file]").set_input_files([str(bad), str(VIS)])
        page.locator("#fuse").click()
        page.get_by_text("broken.png: corrupt or truncated image").first.wait_for(timeout=60_000)
        assert "Traceback" not in page.inner_text("body")
        browser.close()
    assert got == cli_png(tmp_path, "--strategy", "l1_norm", "--output_mode", "clip")
    assert checkout_state() == before
    shutil.rmtree(tmp_path / "cli")
