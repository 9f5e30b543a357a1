#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat 2f263a972ea627c4174d7c1ee97e87cac612983a
restore() {
  for f in "$@"; do
    if git cat-file -e 2f263a972ea627c4174d7c1ee97e87cac612983a:"$f" 2>/dev/null; then git checkout -q 2f263a972ea627c4174d7c1ee97e87cac612983a -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_intervalset.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_intervalset.py b/tests/test_intervalset.py
index 8e68a5e..1eb96e9 100644
--- a/tests/test_intervalset.py
+++ b/tests/test_intervalset.py
@@ -26,3 +26,14 @@ def test_union_and_intersection():
 
 def test_empty_intervals_are_ignored():
     assert len(IntervalSet([Interval(3, 3)])) == 0
+
+
+def test_adjacent_intervals_merge():
+    s = IntervalSet([parse("[0, 5)"), parse("[5, 10)")])
+    assert list(s) == [parse("[0, 10)")]
+    assert 5 in s
+
+
+def test_intervals_with_a_gap_of_one_point_do_not_merge():
+    s = IntervalSet([parse("[0, 5)"), parse("(5, 10)")])
+    assert len(s) == 2 and 5 not in s
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_intervalset.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_intervalset.py'
exit $rc
