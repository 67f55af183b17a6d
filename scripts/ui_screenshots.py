"""Screenshots of the Airflow and MLflow UIs for the README (a maintainer's tool, not a pipeline step).

Needs a Chromium and the `playwright` package, neither of which the pipeline installs:

    apt-get install chromium && python3 -m venv /tmp/pw && /tmp/pw/bin/pip install playwright
    # start the UIs over a home that `make demo` filled (docs/operations.md, "The UIs on localhost"), then
    /tmp/pw/bin/python scripts/ui_screenshots.py --airflow http://127.0.0.1:8080 --mlflow http://127.0.0.1:5000

Writes docs/img/ui_airflow_dags.png, ui_airflow_onboard_city.png, ui_mlflow_registry.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "img"


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--airflow", default="http://127.0.0.1:8080", help="Airflow api-server URL")
    ap.add_argument("--mlflow", default="http://127.0.0.1:5000", help="MLflow UI URL")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--model", default="transfertraj-base", help="registered model whose page to show")
    a = ap.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=a.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 760})
        page.goto(f"{a.airflow}/dags")
        page.wait_for_timeout(6000)
        page.screenshot(path=OUT / "ui_airflow_dags.png")
        page.goto(f"{a.airflow}/dags/onboard_city")
        page.wait_for_timeout(6000)
        page.screenshot(path=OUT / "ui_airflow_onboard_city.png")
        page.goto(f"{a.mlflow}/#/models")
        page.wait_for_timeout(4000)
        # MLflow 3.17 opens a "new registry UI" dialog and an assistant panel on first visit
        for button in ("Try it now", "Close"):
            try:
                page.get_by_role("button", name=button).first.click(timeout=2000)
                page.wait_for_timeout(800)
            except Exception:
                pass
        page.get_by_text(a.model).first.click()
        page.wait_for_timeout(3000)
        page.screenshot(path=OUT / "ui_mlflow_registry.png")
        browser.close()
    print(f"wrote 3 screenshots to {OUT}")


if __name__ == "__main__":
    main()
