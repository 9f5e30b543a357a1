#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat ac375ff78cf27230f3a5c07dbc5cbebbd9e760e3
restore() {
  for f in "$@"; do
    if git cat-file -e ac375ff78cf27230f3a5c07dbc5cbebbd9e760e3:"$f" 2>/dev/null; then git checkout -q ac375ff78cf27230f3a5c07dbc5cbebbd9e760e3 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_parse.py' 'tests/test_units.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_parse.py b/tests/test_parse.py
index a2ecbf1..3dbbf21 100644
--- a/tests/test_parse.py
+++ b/tests/test_parse.py
@@ -29,3 +29,7 @@ def test_not_a_quantity(text):
 def test_unknown_unit_in_text():
     with pytest.raises(UnknownUnit):
         parse_quantity("5 parsecs")
+
+
+def test_parse_micro_sign_from_keyboard():
+    assert parse_quantity("250 \u00b5m").to("mm").value == pytest.approx(0.25)
diff --git a/tests/test_units.py b/tests/test_units.py
index 8e575f1..d6565d2 100644
--- a/tests/test_units.py
+++ b/tests/test_units.py
@@ -30,3 +30,9 @@ def test_temperatures():
     assert convert(-40, "°F", "°C") == pytest.approx(-40)
     assert convert(0, "K", "°C") == pytest.approx(-273.15)
     assert convert(32, "degF", "K") == pytest.approx(273.15)
+
+
+def test_micro_prefix_with_either_mu_character():
+    micro_sign, greek_mu = "\u00b5", "\u03bc"
+    assert get_unit(micro_sign + "m") is get_unit(greek_mu + "m") is get_unit("um")
+    assert convert(1500, micro_sign + "g", "mg") == pytest.approx(1.5)
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_parse.py' 'tests/test_units.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_parse.py' 'tests/test_units.py'
exit $rc
