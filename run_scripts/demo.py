"""A local web page to try DenseFuse on your own images (Gradio).

    pip install -r requirements-demo.txt
    python -m run_scripts.demo                # -> http://127.0.0.1:7860, this machine only

Upload two or more registered images (infrared first, then visible) or pick a bundled pair,
choose the weights, strategy and output mode, and fuse: the sources, the fused image, a
before/after slider, the pair's metrics and the settings are shown, and the PNG and its
fusion_settings.json can be downloaded. The fusion is run_infer.py's own (utils/demo.py), so the
PNG is byte for byte the command line's. Uploads and results live in one temporary folder,
removed when the server stops; nothing is written into the repository.
"""
from __future__ import annotations

import argparse
import sys

from utils.cli import DefaultsFormatter


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=DefaultsFormatter)
    p.add_argument("--port", type=int, default=7860, help="port to listen on (0: any free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on: 127.0.0.1 = this machine only; 0.0.0.0 = every network this "
                        "machine is on (anyone who reaches it can use the page)")
    p.add_argument("--share", action="store_true",
                   help="also ask Gradio for a public share link (needs internet; off unless given)")
    return p


def build_page(root):
    """The Gradio page; fusions go to folders under ``root``."""
    import gradio as gr

    from utils import demo as D
    from utils.metrics import PROFILES
    bundled = D.bundled_pairs()

    def fuse(files, pair, weights, strategy, radius, mode, tile, align, resize, metrics,
             progress=gr.Progress()):  # noqa: B008  (Gradio's own idiom: the default marks the progress bar)
        from pathlib import Path
        sources = [Path(f) for f in files or []] or bundled.get(pair, [])
        progress(0.1, desc="fusing")
        try:
            r = D.fuse_request(sources, root, weights, strategy, radius, mode, tile, align, resize, metrics)
        except D.DemoError as e:
            raise gr.Error(str(e), duration=None) from None
        vis, ir = str(r.sources[-1]), str(r.sources[0])
        return ([str(s) for s in r.sources], str(r.fused), (vis, str(r.fused)), (ir, str(r.fused)),
                [list(m) for m in r.metrics], r.settings, [str(r.fused), str(r.record)])

    with gr.Blocks(title="DenseFuse") as page:
        gr.Markdown("# DenseFuse: infrared and visible image fusion\nUpload two or more registered images "
                    "(infrared first, then visible), or pick a bundled pair, then **Fuse**.")
        with gr.Row():
            with gr.Column():
                files = gr.File(file_count="multiple", label="your images (2+, in order)", elem_id="uploads")
                pair = gr.Dropdown(choices=["", *bundled], value="", label="or a bundled pair")
                weights = gr.Dropdown(choices=list(D.WEIGHTS), value=D.DEFAULT_WEIGHTS, label="weights")
                strategy = gr.Dropdown(choices=list(D.STRATEGIES), value="add", label="strategy", elem_id="strategy")
                mode = gr.Radio(choices=list(D.MODES), value="minmax", label="output mode", elem_id="mode")
                with gr.Accordion("more options", open=False):
                    radius = gr.Number(value=1, precision=0, label="l1_norm block radius")
                    tile = gr.Number(value=0, precision=0, label="tile (0 automatic, -1 never)")
                    align = gr.Checkbox(label="--align: register the images (different cameras)")
                    resize = gr.Checkbox(label="--resize: resample to the visible image's size")
                    metrics = gr.CheckboxGroup(choices=list(PROFILES["standard"]), label="metrics (none: all)")
                go = gr.Button("Fuse", variant="primary", elem_id="fuse")
            with gr.Column():
                fused = gr.Image(label="fused", type="filepath", elem_id="fused")
                slider_vis = gr.ImageSlider(label="visible | fused", type="filepath")
                slider_ir = gr.ImageSlider(label="infrared | fused", type="filepath")
                downloads = gr.File(label="download: fused PNG and its settings", elem_id="downloads")
        sources = gr.Gallery(label="sources", columns=4, height=220)
        table = gr.Dataframe(headers=["metric", "value", "better"], label="metrics of the pair")
        settings = gr.JSON(label="settings (fusion_settings.json)")
        go.click(fuse, [files, pair, weights, strategy, radius, mode, tile, align, resize, metrics],
                 [sources, fused, slider_vis, slider_ir, table, settings, downloads], concurrency_limit=1)
    return page


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from configs import TEST_DATA
    root = Path(tempfile.mkdtemp(prefix="densefuse-demo-"))
    # Gradio's uploads and cache go to the same folder; no usage reports leave the machine.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(root / "gradio"))
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("error: the demo needs Gradio: pip install -r requirements-demo.txt", file=sys.stderr)
        return 2
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a stop by kill or a service manager cleans up too
    try:
        page = build_page(root)
        os.chdir(root)  # whatever Gradio writes beside itself (.gradio/) lands here, not in the checkout
        page.launch(server_name=args.host, server_port=args.port or None, share=args.share, show_error=True,
                    allowed_paths=[str(root), str(TEST_DATA)], footer_links=[])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
