#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat d5636dfea49075d5730f03314696229b3effe8ce
restore() {
  for f in "$@"; do
    if git cat-file -e d5636dfea49075d5730f03314696229b3effe8ce:"$f" 2>/dev/null; then git checkout -q d5636dfea49075d5730f03314696229b3effe8ce -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_money.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_money.py b/tests/test_money.py
index fd181f7..643948d 100644
--- a/tests/test_money.py
+++ b/tests/test_money.py
@@ -25,3 +25,13 @@ def test_float_input_is_exact():
 
 def test_rounding_simple():
     assert Money("1.234").rounded() == Money("1.23")
+
+
+def test_rounding_half_up():
+    assert Money("2.675").rounded() == Money("2.68")
+    assert Money("0.125").rounded() == Money("0.13")
+    assert Money("-0.125").rounded() == Money("-0.13")
+
+
+def test_str_uses_commercial_rounding():
+    assert str(Money("1.005")) == "1.01 EUR"
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_money.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_money.py'
exit $rc
