"""The Backstage example's recorded catalog is the one the controller serves.

`examples/backstage/test/fixtures/catalog.json` was recorded from `GET /api/v1/catalog`
of a running controller over the portal tests' repository; the example's Jest tests
(run by `.ci/run` with npm) build their template and fake API from it. This keeps the
recording in step with `reconciler.controller.portal.catalog`: a change to the catalog's shape
fails here until the fixture is recorded again.
"""

from __future__ import annotations

import json

from reconciler.controller.portal.catalog import build_catalog
from reconciler.load.load import load_files
from tests.conftest import ROOT
from tests.controller.portal.conftest import FILES

EXAMPLE = ROOT / "examples" / "backstage"


def test_the_recorded_catalog_is_what_the_controller_serves() -> None:
    recorded = json.loads((EXAMPLE / "test" / "fixtures" / "catalog.json").read_text())
    desired = load_files({path: text.encode() for path, text in FILES.items()}).desired
    assert desired is not None
    served = build_catalog(desired)
    assert {**recorded, "revision": None} == {**served, "revision": None}


def test_the_template_calls_the_action_the_package_defines() -> None:
    template = (EXAMPLE / "template.yaml").read_text()
    action = (EXAMPLE / "src" / "action.ts").read_text()
    assert "action: reconciler:request" in template
    assert "id: 'reconciler:request'" in action
    package = json.loads((EXAMPLE / "package.json").read_text())
    assert package["scripts"]["test"] == "jest"
    assert package["devDependencies"]["jest"].startswith("^29")
