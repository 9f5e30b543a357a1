#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat 221ebc97dbe5c811f59ec8741fb46f805ba6700a
restore() {
  for f in "$@"; do
    if git cat-file -e 221ebc97dbe5c811f59ec8741fb46f805ba6700a:"$f" 2>/dev/null; then git checkout -q 221ebc97dbe5c811f59ec8741fb46f805ba6700a -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_units.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_units.py b/tests/test_units.py
index 7a97e41..8e575f1 100644
--- a/tests/test_units.py
+++ b/tests/test_units.py
@@ -23,3 +23,10 @@ def test_length_conversion():
 def test_incompatible():
     with pytest.raises(IncompatibleUnits):
         convert(1, "kg", "m")
+
+
+def test_temperatures():
+    assert convert(100, "°C", "°F") == pytest.approx(212)
+    assert convert(-40, "°F", "°C") == pytest.approx(-40)
+    assert convert(0, "K", "°C") == pytest.approx(-273.15)
+    assert convert(32, "degF", "K") == pytest.approx(273.15)
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_units.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_units.py'
exit $rc
