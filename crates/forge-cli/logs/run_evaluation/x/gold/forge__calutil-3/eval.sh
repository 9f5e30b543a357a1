#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat acfb991140d3b66ef56a12d38658c4676b6d7bdc
restore() {
  for f in "$@"; do
    if git cat-file -e acfb991140d3b66ef56a12d38658c4676b6d7bdc:"$f" 2>/dev/null; then git checkout -q acfb991140d3b66ef56a12d38658c4676b6d7bdc -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_ranges.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_ranges.py b/tests/test_ranges.py
index efcb278..6a399ad 100644
--- a/tests/test_ranges.py
+++ b/tests/test_ranges.py
@@ -17,3 +17,18 @@ def test_zero_step_rejected():
 def test_step_skips_days():
     days = date_range(dt.date(2024, 1, 1), dt.date(2024, 1, 6), 2)
     assert days == [dt.date(2024, 1, 1), dt.date(2024, 1, 3), dt.date(2024, 1, 5)]
+
+
+def test_end_is_included():
+    days = date_range(dt.date(2024, 2, 27), dt.date(2024, 3, 1))
+    assert days[-1] == dt.date(2024, 3, 1)
+    assert len(days) == 4
+
+
+def test_single_day_range():
+    assert date_range(dt.date(2024, 1, 1), dt.date(2024, 1, 1)) == [dt.date(2024, 1, 1)]
+
+
+def test_backwards_inclusive():
+    days = date_range(dt.date(2024, 1, 3), dt.date(2024, 1, 1), -1)
+    assert days == [dt.date(2024, 1, 3), dt.date(2024, 1, 2), dt.date(2024, 1, 1)]
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_ranges.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_ranges.py'
exit $rc
