#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat d63d5efb83e701ea85f3601f69521c61963c6e23
restore() {
  for f in "$@"; do
    if git cat-file -e d63d5efb83e701ea85f3601f69521c61963c6e23:"$f" 2>/dev/null; then git checkout -q d63d5efb83e701ea85f3601f69521c61963c6e23 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_leap.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_leap.py b/tests/test_leap.py
index b9b098c..fa04010 100644
--- a/tests/test_leap.py
+++ b/tests/test_leap.py
@@ -16,3 +16,15 @@ def test_february():
 def test_bad_month():
     with pytest.raises(ValueError):
         days_in_month(2024, 13)
+
+
+@pytest.mark.parametrize("year", [1700, 1800, 1900, 2100])
+def test_centuries_are_not_leap(year):
+    assert not is_leap(year)
+    assert days_in_month(year, 2) == 28
+
+
+def test_every_400th_year_is_leap():
+    assert is_leap(2000)
+    assert days_in_year(2000) == 366
+    assert days_in_year(1900) == 365
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_leap.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_leap.py'
exit $rc
