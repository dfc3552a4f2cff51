"""Build build/plots.html, the page `dvc plots show` fills, with Vega inlined so it renders offline.

DVC's default page loads vega, vega-lite and vega-embed from a CDN. .dvc/config points
plots.html_template here instead; vl-convert-python (a pinned PyPI package) carries those libraries
and bundles them into one script. Run by `make` at set-up; the page is built, never committed.
"""

import sys
from pathlib import Path

import vl_convert

# DVC's templates declare Vega-Lite v5 ("$schema": ".../vega-lite/v5.json"): bundle the newest v5.
VEGA_LITE = max(
    (v for v in vl_convert.get_vegalite_versions() if v.startswith("5.")), key=lambda v: [int(p) for p in v.split(".")]
)

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    <title>addnet plots</title>
    <script>{bundle}</script>
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def main(out="build/plots.html"):
    # The bundle sets window.vegaEmbed, which each of DVC's plot divs calls from an inline script.
    page = PAGE.format(bundle=vl_convert.javascript_bundle(vl_version=VEGA_LITE).replace("</script", "<\\/script"))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    print(f"{out}: offline plots page ({len(page) // 1024} KiB, vega-lite {VEGA_LITE})")


if __name__ == "__main__":
    main(*sys.argv[1:])
