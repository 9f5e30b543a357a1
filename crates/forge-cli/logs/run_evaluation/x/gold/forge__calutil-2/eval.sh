#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat d820a124f84d1c165bb2b66dcaf3268a4e05fab3
restore() {
  for f in "$@"; do
    if git cat-file -e d820a124f84d1c165bb2b66dcaf3268a4e05fab3:"$f" 2>/dev/null; then git checkout -q d820a124f84d1c165bb2b66dcaf3268a4e05fab3 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_business.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_business.py b/tests/test_business.py
index dba28bb..22b5a98 100644
--- a/tests/test_business.py
+++ b/tests/test_business.py
@@ -20,3 +20,15 @@ def test_zero():
 
 def test_holiday_skipped():
     assert add_business_days(MON, 1, holidays={dt.date(2024, 6, 11)}) == dt.date(2024, 6, 12)
+
+
+def test_friday_plus_one_is_monday():
+    assert add_business_days(dt.date(2024, 6, 14), 1) == dt.date(2024, 6, 17)
+
+
+def test_spanning_two_weekends():
+    assert add_business_days(MON, 10) == dt.date(2024, 6, 24)
+
+
+def test_backwards_over_weekend():
+    assert add_business_days(MON, -1) == dt.date(2024, 6, 7)
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_business.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_business.py'
exit $rc
