#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat 248f3548d0a711aaf83520675be5c4bb5dc2dfe9
restore() {
  for f in "$@"; do
    if git cat-file -e 248f3548d0a711aaf83520675be5c4bb5dc2dfe9:"$f" 2>/dev/null; then git checkout -q 248f3548d0a711aaf83520675be5c4bb5dc2dfe9 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_schedule.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_schedule.py b/tests/test_schedule.py
index 6f3e3a2..2c4f2fe 100644
--- a/tests/test_schedule.py
+++ b/tests/test_schedule.py
@@ -36,3 +36,13 @@ def test_iterate_steps():
     times = iterate("*/20 * * * *", datetime(2024, 1, 1, 10, 5), 4)
     assert times == [datetime(2024, 1, 1, 10, 20), datetime(2024, 1, 1, 10, 40),
                      datetime(2024, 1, 1, 11, 0), datetime(2024, 1, 1, 11, 20)]
+
+
+def test_next_after_a_matching_time_is_the_following_one():
+    assert next_after("0 * * * *", datetime(2024, 1, 1, 10, 0)) == datetime(2024, 1, 1, 11, 0)
+
+
+def test_next_after_is_strictly_later_for_every_minute():
+    start = datetime(2024, 1, 1, 6, 0)
+    assert next_after("0 */6 * * *", start) == datetime(2024, 1, 1, 12, 0)
+    assert next_after("* * * * *", start) == datetime(2024, 1, 1, 6, 1)
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_schedule.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_schedule.py'
exit $rc
