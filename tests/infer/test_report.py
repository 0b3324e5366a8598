"""The figures of `hamflow plot` inside a `snakemake --report` HTML report, with captions.

A throwaway workflow in tmp_path marks the PNGs as report outputs (the project's own rules do the same
with workflow/report/ captions). Where a headless Chromium is installed, one report page is rendered to
PNG after opening the Evaluation category and the parity figure, and the screenshot must show it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from hamflow.infer.evaluate import evaluate_predictions
from hamflow.infer.plots import plot_all

pytestmark = pytest.mark.slow  # two snakemake runs and a browser: ~20-60 s on 2 shared cores

METRICS_CSV = (
    "epoch,step,wall_time_s,train_loss,validate_loss,validate_mae,learning_rate,lr_scale\n"
    + "".join(f"{e},{10 * e},{e * 2.0},{2.0 / e},{2.5 / e},{0.4 / e},{0.003 / e},1\n" for e in range(1, 6))
)

SNAKEFILE = """
rule all:
    input: expand("out/{name}.png", name=["training_curves", "parity", "element_pair_mae"])

rule figures:
    input: "png/training_curves.png", "png/parity.png", "png/element_pair_mae.png"
    output:
        report("out/training_curves.png", caption="captions/training_curves.rst", category="Training"),
        report("out/parity.png", caption="captions/parity.rst", category="Evaluation"),
        report("out/element_pair_mae.png", caption="captions/element_pair_mae.rst", category="Evaluation"),
    shell: "mkdir -p out && cp {input} out/"
"""

CAPTIONS = {
    "training_curves": "Training and validation loss, validation MAE (meV) and learning rate per epoch.",
    "parity": "Predicted against DFT Hamiltonian entries and the distribution of absolute errors (meV).",
    "element_pair_mae": "Mean absolute error (meV) of the predicted Hamiltonian per element pair.",
}

OPEN_PARITY = "\n".join(
    [
        "<script>",
        "function leaves(t){return [...document.querySelectorAll('*')]",
        "  .filter(e=>e.children.length===0&&e.textContent.trim()===t)}",
        "setTimeout(()=>{const e=leaves('Evaluation'); if(e.length) e[e.length-1].click();},1500);",
        "setTimeout(()=>{const e=leaves('out/parity.png'); if(!e.length) return; let row=e[0];",
        "  for(let k=0;k<3;k++){ if(row.parentElement) row=row.parentElement;",
        "    const c=row.querySelectorAll('a,button,svg'); if(!c.length) continue;",
        "    (c[0].closest('a,button')||c[0]).dispatchEvent(new MouseEvent('click',{bubbles:true})); break;}",
        "},3000);",
        "</script></body>",
    ]
)


def _snakemake(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_plots_show_in_a_snakemake_report(deeph_dock: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text(METRICS_CSV)
    evaluation = tmp_path / "eval"
    h2o = deeph_dock / "h2o"
    evaluate_predictions(h2o, h2o / "pred", out_dir=evaluation, standardize_gauge=True, bands=False)
    workflow = tmp_path / "workflow"
    plot_all([run, evaluation], workflow / "png")
    (workflow / "captions").mkdir()
    for name, text in CAPTIONS.items():
        (workflow / "captions" / f"{name}.rst").write_text(text + "\n")
    (workflow / "Snakefile").write_text(SNAKEFILE)
    _snakemake("-c1", "--quiet", "all", cwd=workflow)
    _snakemake("--report", "report.html", cwd=workflow)
    html = (workflow / "report.html").read_text(encoding="utf-8")
    for name in CAPTIONS:
        assert f"out/{name}.png" in html

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no headless Chromium to render the report page (apt-get install chromium)")
    opened = workflow / "report_parity.html"
    opened.write_text(html[: html.rindex("</body>")] + OPEN_PARITY + html[html.rindex("</body>") + 7 :])
    screenshot = tmp_path / "page.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1000"]
    subprocess.run(
        [chromium, *flags, "--virtual-time-budget=8000", f"--screenshot={screenshot}", opened.as_uri()],
        capture_output=True,
        timeout=180,
        check=False,
    )
    image = matplotlib.image.imread(screenshot)
    # the parity figure fills the right-hand pane: many distinct colours there, not a blank page
    pane = image[100:900, 450:1350, :3].reshape(-1, 3)
    assert len({tuple(pixel) for pixel in (pane * 255).astype(int)[::7]}) > 200
