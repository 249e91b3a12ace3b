"""One self-contained HTML page of captioned images: each picture embedded as a data URI (no files
beside the page), its generated caption, the nearest-image baseline's caption and the references.

Pillow (optional) makes the thumbnails; without it, image files are embedded as they are and pixel arrays
are left out (the captions are still shown).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

THUMB = 224  # longest side of the embedded picture, in pixels


def image_data_uri(image) -> str | None:
    """A `data:` URI for a file path or a uint8 (S, S, 3) array; None if it cannot be made."""
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if image is None:
        return None
    if isinstance(image, (str, Path)):
        path = Path(image)
        if Image is None:
            mime = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
            return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                im.thumbnail((THUMB, THUMB))
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=85)
        except OSError:
            return None
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    if Image is None:
        return None
    arr = np.asarray(image, dtype=np.uint8)
    im = Image.fromarray(arr)
    if max(im.size) < THUMB // 2:  # small arrays (64x64) are shown enlarged, pixel for pixel
        im = im.resize((im.size[0] * 2, im.size[1] * 2), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_caption_html(path, items, title="Captions", summary=None):
    """items: dicts with name, image (path / array / None), generated, references (list of str), and
    optionally nearest (baseline caption) and bleu4 (sentence BLEU). summary: figures shown on top."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:1100px}"
        ".item{display:flex;gap:1em;border-bottom:1px solid #ddd;padding:.8em 0}"
        ".item img{width:224px;height:auto;flex:none}.gen{font-weight:bold;font-size:1.1em}"
        ".nn{color:#666}ul{margin:.3em 0;padding-left:1.2em}td,th{padding:2px 8px;text-align:right}"
        "</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if summary:
        rows = []
        for label, key in (("model", None), ("most frequent caption", "baseline_most_frequent"),
                           ("nearest training image", "baseline_nearest_image")):
            src = summary if key is None else summary.get(key, {})
            if "bleu4" in src:
                rows.append(f"<tr><th style='text-align:left'>{esc(label)}</th>" + "".join(
                    f"<td>{src[f'bleu{n}']:.2f}</td>" for n in range(1, 5)) + "</tr>")
        if rows:
            parts.append("<table><tr><th></th><th>BLEU-1</th><th>BLEU-2</th><th>BLEU-3</th>"
                         "<th>BLEU-4</th></tr>" + "".join(rows) + "</table>")
        extra = {k: v for k, v in summary.items() if not isinstance(v, dict) and not k.startswith("bleu")}
        parts.append("<p>" + esc(", ".join(f"{k}: {v}" for k, v in extra.items())) + "</p>")
    for it in items:
        uri = image_data_uri(it.get("image"))
        img = f'<img src="{uri}" alt="{esc(it["name"])}">' if uri else "<div>(no image)</div>"
        refs = "".join(f"<li>{esc(r)}</li>" for r in it.get("references", []))
        bleu = f" <small>(sentence BLEU-4 {it['bleu4']:.1f})</small>" if "bleu4" in it else ""
        nn = (f'<div class="nn">nearest training image: {esc(it["nearest"])}</div>'
              if it.get("nearest") else "")
        parts.append(f'<div class="item">{img}<div><div><code>{esc(it["name"])}</code></div>'
                     f'<div class="gen">{esc(it["generated"])}{bleu}</div>{nn}'
                     f"<div>references:</div><ul>{refs}</ul></div></div>")
    parts.append("</body></html>")
    from rnnkit.train.checkpoint import write_bytes_atomic

    write_bytes_atomic(path, ("\n".join(parts) + "\n").encode("utf-8"))
    return Path(path)
