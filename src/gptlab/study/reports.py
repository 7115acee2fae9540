"""Render a parameterised notebook into a report: papermill, then self-contained HTML.

The page shows what the notebook displays (text, tables, figures), not its code:
the executed notebook beside it keeps the code with the outputs.
"""

from __future__ import annotations

from pathlib import Path

from ..io import atomic_write


class ReportError(RuntimeError):
    """A report notebook raised an error; the message names the cell."""


def render_report(
    notebook, parameters: dict, out_ipynb, out_html, kernel_name: str = "python3", cwd=None
) -> Path:
    """Execute ``notebook`` with ``parameters`` (artifact paths) and write the executed
    notebook and an HTML page with every image embedded (it displays offline) and no code."""
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

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
        )
    except pm.PapermillExecutionError as exc:
        raise ReportError(f"{notebook}: cell {exc.exec_count} failed: {exc.ename}: {exc.evalue}") from exc
    finally:
        if tmp_nb.exists():
            atomic_write(out_ipynb, lambda tmp: tmp.write_bytes(tmp_nb.read_bytes()))
            tmp_nb.unlink()

    nb = nbformat.read(out_ipynb, as_version=4)
    exporter = HTMLExporter(embed_images=True, exclude_input=True, exclude_output_prompt=True)
    html, _ = exporter.from_notebook_node(nb)
    atomic_write(out_html, lambda tmp: tmp.write_text(html, encoding="utf-8"))
    return out_html
