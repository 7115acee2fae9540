"""Render a parameterised notebook into a report: papermill, then self-contained HTML.

The page shows what the notebook displays (text, tables, figures), not its code:
the executed notebook beside it keeps the code with the outputs. It is laid out as
one readable column, titled after the notebook's first heading, with its images
embedded and no scripts fetched from the network (it displays offline).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..io import atomic_write

# One readable column; notices (Markdown block quotes, gptlab.study.notebook.notice) as boxes.
STYLE = """<style>
body.jp-Notebook { max-width: 64rem; margin: 0 auto; padding: 1rem 2rem 4rem; }
.jp-Cell { padding-left: 0; padding-right: 0; }
.jp-RenderedHTMLCommon blockquote {
  margin: 1em 0; padding: 0.5em 1em; border-left: 5px solid #d39e00; background: #fff6d9;
}
.jp-RenderedHTMLCommon table { margin-left: 0; font-size: 0.85rem; }
.jp-RenderedImage img { max-width: 100%; height: auto; }
</style>
"""


def _title(nb) -> str:
    """The text of the notebook's first heading (Markdown markup removed), or "Report"."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#+\s+(.+)$", cell.source, re.MULTILINE)
            if match:
                return re.sub(r"[`*_]", "", match.group(1)).strip()
    return "Report"


def to_html(nb) -> str:
    """The executed notebook ``nb`` as one HTML page: no code, images embedded, nothing fetched."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        embed_images=True,
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        mathjax_url="",
        require_js_url="",
    )
    html, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": _title(nb)}})
    html = re.sub(r'<script src="">\s*</script>', "", html)
    return html.replace("</head>", STYLE + "</head>", 1)


class ReportError(RuntimeError):
    """A report notebook raised an error; the message names the cell."""


def render_report(
    notebook, parameters: dict, out_ipynb, out_html, kernel_name: str = "python3", cwd=None
) -> Path:
    """Execute ``notebook`` with ``parameters`` (artifact paths) and write the executed
    notebook and an HTML page with every image embedded (it displays offline) and no code."""
    import nbformat
    import papermill as pm

    out_ipynb, out_html = Path(out_ipynb), Path(out_html)
    parameters = {k: str(Path(v).resolve()) if isinstance(v, Path) else v for k, v in parameters.items()}
    tmp_nb = out_ipynb.with_name(f".{out_ipynb.name}.running.ipynb")
    try:
        pm.execute_notebook(
            str(notebook),
            str(tmp_nb),
            parameters=parameters,
            kernel_name=kernel_name,
            cwd=str(cwd) if cwd else None,
            progress_bar=False,
            # The kernel talks to papermill over loopback; its warning about that is noise here.
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    except pm.PapermillExecutionError as exc:
        raise ReportError(f"{notebook}: cell {exc.exec_count} failed: {exc.ename}: {exc.evalue}") from exc
    finally:
        if tmp_nb.exists():
            atomic_write(out_ipynb, lambda tmp: tmp.write_bytes(tmp_nb.read_bytes()))
            tmp_nb.unlink()

    html = to_html(nbformat.read(out_ipynb, as_version=4))
    atomic_write(out_html, lambda tmp: tmp.write_text(html, encoding="utf-8"))
    return out_html
