#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat a842d07d15eccd6d036b21ecf32fa74b77a95ae7
restore() {
  for f in "$@"; do
    if git cat-file -e a842d07d15eccd6d036b21ecf32fa74b77a95ae7:"$f" 2>/dev/null; then git checkout -q a842d07d15eccd6d036b21ecf32fa74b77a95ae7 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_quantity.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_quantity.py b/tests/test_quantity.py
index 7d832c7..d9d2437 100644
--- a/tests/test_quantity.py
+++ b/tests/test_quantity.py
@@ -27,3 +27,10 @@ def test_format():
     assert Quantity(5, "km").format() == "5 km"
     assert Quantity(3.10686, "mi").format(2) == "3.11 mi"
     assert str(Quantity(1.5, "kg")) == "1.5 kg"
+
+
+def test_format_rounds_halves_up():
+    assert Quantity(0.125, "kg").format(2) == "0.13 kg"
+    assert Quantity(2.675, "m").format(2) == "2.68 m"
+    assert Quantity(2.5, "h").format(0) == "3 h"
+    assert Quantity(-0.5, "s").format(0) == "-1 s"
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_quantity.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_quantity.py'
exit $rc
