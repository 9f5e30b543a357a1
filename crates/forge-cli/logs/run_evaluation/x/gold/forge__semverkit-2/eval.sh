#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat a2e05e3cb8b17a28223bd452f7c1682a5b0e338a
restore() {
  for f in "$@"; do
    if git cat-file -e a2e05e3cb8b17a28223bd452f7c1682a5b0e338a:"$f" 2>/dev/null; then git checkout -q a2e05e3cb8b17a28223bd452f7c1682a5b0e338a -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_ranges.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_ranges.py b/tests/test_ranges.py
index 797a808..11a0649 100644
--- a/tests/test_ranges.py
+++ b/tests/test_ranges.py
@@ -34,3 +34,15 @@ def test_max_satisfying():
 def test_bad_range():
     with pytest.raises(InvalidRange):
         Range("^banana")
+
+
+@pytest.mark.parametrize("version,rng,expected", [
+    ("0.2.5", "^0.2.3", True),
+    ("0.3.0", "^0.2.3", False),
+    ("0.9.0", "^0.2.3", False),
+    ("0.0.3", "^0.0.3", True),
+    ("0.0.4", "^0.0.3", False),
+    ("0.5.0", "^0.x", True),
+])
+def test_caret_below_one_point_zero(version, rng, expected):
+    assert satisfies(version, rng) is expected
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_ranges.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_ranges.py'
exit $rc
