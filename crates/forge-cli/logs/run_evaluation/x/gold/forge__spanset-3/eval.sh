#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat 6fac3b832114ec949981f7b08f0bdcb80833f928
restore() {
  for f in "$@"; do
    if git cat-file -e 6fac3b832114ec949981f7b08f0bdcb80833f928:"$f" 2>/dev/null; then git checkout -q 6fac3b832114ec949981f7b08f0bdcb80833f928 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_interval.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_interval.py b/tests/test_interval.py
index 9f02439..a9cc8a9 100644
--- a/tests/test_interval.py
+++ b/tests/test_interval.py
@@ -35,3 +35,9 @@ def test_length():
 def test_overlaps():
     assert Interval(0, 5).overlaps(Interval(4, 6))
     assert not Interval(0, 5).overlaps(Interval(6, 7))
+
+
+def test_intervals_that_only_share_an_open_end_do_not_overlap():
+    assert not Interval(0, 5).overlaps(Interval(5, 10))
+    assert not Interval.open(0, 5).overlaps(Interval.closed(5, 10))
+    assert Interval.closed(0, 5).overlaps(Interval.closed(5, 10))
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_interval.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_interval.py'
exit $rc
