"""Real documents of every supported kind (and broken ones), written on the fly for the ingestion tests."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

CORPUS = Path(__file__).parent / "data" / "corpus.md"  # the small shared test corpus

NESTED_MD = """---
title: Field guide
---
# Birds

Birds are warm-blooded vertebrates with feathers, beaks and hollow bones that lay hard-shelled eggs.

## Owls

Owls hunt at night; their soft feathers make their flight almost silent and their eyes face forward.

### Barn owl

The barn owl has a heart-shaped white face and nests in old barns, church towers and hollow trees.

```python
# not a heading: this is a comment inside a code fence
print("hoot")
```

## Penguins

Penguins cannot fly; they swim with stiff flippers and live almost only in the Southern Hemisphere.
"""

HTML = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Tide pools</title>
<style>body { color: SECRETSTYLE; }</style>
<script>var tracking = "SECRETSCRIPT";</script></head>
<body>
<nav>Home</nav>
<h1>Tide pools</h1>
<p>Tide pools are rocky hollows that keep sea water when the tide goes out, sheltering crabs and snails.</p>
<script>console.log("SECRETSCRIPT2")</script>
<h2>Anemones</h2>
<p>Sea anemones sting small fish with their tentacles and close up when the water drains away.</p>
<noscript>SECRETNOSCRIPT</noscript>
<!-- SECRETCOMMENT -->
</body></html>
"""

LATIN1_TEXT = ("# Cuisine française\n\nLa crème brûlée est un dessert célèbre: une crème à la vanille, "
               "recouverte d'une fine couche de sucre caramélisé. Le café au lait, la bouillabaisse "
               "et la tarte Tatin sont d'autres spécialités appréciées à Paris et à Marseille.\n")

PDF_PAGES = [
    "Glaciers are rivers of ice that move slowly downhill under their own weight.",
    "Icebergs break off glaciers where they meet the sea, a process called calving.",
    "Permafrost is ground that stays frozen for at least two years in a row.",
]


def write_markdown(folder: Path, name: str = "guide.md", text: str = NESTED_MD) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def write_html(folder: Path, name: str = "tides.html") -> Path:
    path = folder / name
    path.write_text(HTML, encoding="utf-8")
    return path


def write_latin1(folder: Path, name: str = "cuisine.txt") -> Path:
    path = folder / name
    path.write_bytes(LATIN1_TEXT.encode("cp1252"))
    return path


def write_pdf(folder: Path, name: str = "ice.pdf", pages=PDF_PAGES, password: str | None = None) -> Path:
    from reportlab.pdfgen import canvas

    path = folder / name
    pdf = canvas.Canvas(str(path), encrypt=password)
    pdf.setTitle("Ice")
    for text in pages:
        pdf.drawString(72, 720, text)
        pdf.showPage()
    pdf.save()
    return path


def write_docx(folder: Path, name: str = "report.docx") -> Path:
    import docx

    document = docx.Document()
    document.add_heading("Annual report", level=1)
    document.add_paragraph("The orchard produced more apples this year than in any year before.")
    document.add_heading("Pears", level=2)
    document.add_paragraph("Pear trees suffered from a late frost in April and gave half the usual harvest.")
    document.add_paragraph("Plant frost-resistant varieties", style="List Bullet")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Fruit", "Tonnes"
    table.cell(1, 0).text, table.cell(1, 1).text = "Apples", "120"
    path = folder / name
    document.save(str(path))
    return path


def write_empty(folder: Path, name: str = "empty.md") -> Path:
    path = folder / name
    path.write_bytes(b"")
    return path


def write_binary_as_text(folder: Path, name: str = "photo.txt") -> Path:
    path = folder / name
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8)
    return path


def write_corrupt_pdf(folder: Path, name: str = "broken.pdf") -> Path:
    path = folder / name
    path.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> garbage garbage\n")
    return path


def write_zip(folder: Path, members: dict[str, bytes], name: str = "bundle.zip") -> Path:
    path = folder / name
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(zipfile.ZipInfo(member), data, compress_type=zipfile.ZIP_DEFLATED)
    return path


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(zipfile.ZipInfo(member), data, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


GOOD_ZIP_MEMBER = b"# Lighthouses\n\nLighthouses guide ships past rocks with a bright rotating lamp at night.\n"
BOMB_MEMBER = b"\0" * (2 * 1024 * 1024)  # 2 MB of zeros deflate about 1000x
